"""Check a freshly written ONNX file: onnxruntime (CPU) against the torch module on the same random inputs.

The metric is the one the project's parity tests use: max |ort - torch| / max |torch| per output, worst output
reported. Beyond the tolerance the export fails with :class:`ExportError`, naming the file and both errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ditto_research.backends.base import NetworkIO, get_graph_io
from ditto_research.backends.onnx import make_session
from ditto_research.errors import ExportError

__all__ = ["VerifyReport", "compare_outputs", "verify_export"]


@dataclass(frozen=True)
class VerifyReport:
    """Worst-output errors of one verified file."""

    path: Path
    batch: int
    max_abs: float
    max_rel: float
    tolerance: float
    worst_output: str

    @property
    def passed(self) -> bool:
        return self.max_rel <= self.tolerance

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.path.name}: batch {self.batch}, onnxruntime vs torch max abs {self.max_abs:.3e}, "
            f"max rel {self.max_rel:.3e} ({self.worst_output}; tolerance {self.tolerance:.0e}) {verdict}"
        )


def compare_outputs(
    ours: Sequence[np.ndarray], reference: Sequence[np.ndarray], names: Sequence[str]
) -> tuple[float, float, str]:
    """(max abs error, max relative error, name of the worst output) over paired outputs."""
    worst = (0.0, 0.0, names[0] if names else "")
    for name, a, b in zip(names, ours, reference):
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a64.shape != b64.shape:
            return float("inf"), float("inf"), f"{name} shape {a64.shape} != torch {b64.shape}"
        if not np.isfinite(a64).all() and np.isfinite(b64).all():
            return float("inf"), float("inf"), f"{name} has non-finite values"
        abs_err = float(np.abs(a64 - b64).max()) if a64.size else 0.0
        rel_err = abs_err / (float(np.abs(b64).max()) or 1.0) if b64.size else 0.0
        if rel_err > worst[1] or (rel_err == worst[1] and abs_err > worst[0]):
            worst = (abs_err, rel_err, name)
    return worst


def _torch_outputs(module: nn.Module, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    with torch.no_grad():
        result: Any = module(*inputs)
    outputs = list(result) if isinstance(result, tuple) else [result]
    return [out.detach().float().cpu().numpy() for out in outputs]


def verify_export(
    path: str | Path,
    name: str | NetworkIO,
    reference: nn.Module,
    inputs: Sequence[torch.Tensor],
    tolerance: float,
) -> VerifyReport:
    """Run ``path`` on onnxruntime (CPU) and ``reference`` on ``inputs``; raise ExportError beyond tolerance.

    ``name``: a network, a graph of the LMDM pair (``lmdm_memory`` / ``lmdm_step``) or its interface.
    """
    path = Path(path)
    io = name if isinstance(name, NetworkIO) else get_graph_io(name)
    session = make_session(path, "cpu", label=str(path))
    feeds = {
        spec.name: np.ascontiguousarray(x.cpu().numpy(), dtype=spec.dtype)
        for spec, x in zip(io.inputs, inputs)
    }
    try:
        ours = session.run(None, feeds)
    except Exception as e:  # onnxruntime's own exception types (a graph that cannot run these shapes)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(
            f"{path} failed verification: onnxruntime cannot run it on inputs "
            f"{ {n: tuple(v.shape) for n, v in feeds.items()} }: {first}"
        ) from e
    theirs = _torch_outputs(reference, inputs)
    max_abs, max_rel, worst = compare_outputs(ours, theirs, io.output_names)
    report = VerifyReport(path, int(inputs[0].shape[0]), max_abs, max_rel, tolerance, worst)
    if not report.passed:
        raise ExportError(
            f"{path} failed verification: onnxruntime differs from torch by max rel {max_rel:.3e} "
            f"(max abs {max_abs:.3e}, output {worst}) > tolerance {tolerance:.0e}; the file was written but "
            "should not be used"
        )
    return report
