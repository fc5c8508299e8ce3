"""``python -m ditto_research.export.onnx``: write the Ditto networks as ONNX files laid out like the official
``ditto_onnx/``.

    python -m ditto_research.export.onnx model=ditto output_dir=checkpoints/ditto_onnx
    python -m ditto_research.export.onnx model=untrained precision=fp16 grid_sample=decomposed \\
        output_dir=/tmp/onnx
    python -m ditto_research.export.onnx model=ditto networks=[lmdm] lmdm_form=cached \\
        output_dir=checkpoints/ditto_onnx

Each file gets the official input/output names (:data:`ditto_research.backends.base.NETWORK_IO`), opset 20 by
default, optional dynamic batch, and ``ditto.*`` metadata (precision, grid_sample, guidance_weight, model)
that the ONNX backend checks. Right after writing, every file is run on onnxruntime against the float32 torch
module (:mod:`ditto_research.export.verify`) and the error is printed; a file beyond tolerance fails the
export.

Random weights (model=untrained / tiny) use the pipeline's seeds (``model.seed`` + the network's index), so an
untrained export computes the same functions as ``backend=pytorch model=untrained``.

``lmdm_form=cached`` (or ``both``) writes the LMDM as two graphs with the sampler speedups baked in (the
condition memory once per window, the guided step over it; :mod:`ditto_research.backends.lmdm_pair`), each
verified against its torch module like the other networks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from ditto_research.apps import HydraApp
from ditto_research.backends.base import FP32_NETWORKS, LMDM_PAIR_IO, NetworkIO, example_inputs, get_graph_io
from ditto_research.backends.onnx import METADATA_PREFIX
from ditto_research.config import folder_write_error, to_config
from ditto_research.config.schema import ModelConfig, MotionConfig
from ditto_research.errors import DittoError, ExportError
from ditto_research.export.config import ExportConfig, register_export_configs, resolve_output_dir
from ditto_research.export.grid_sample import make_grid_sample
from ditto_research.export.verify import VerifyReport, verify_export

__all__ = [
    "APP",
    "ExportResult",
    "IOWrapper",
    "build_network",
    "check_overwrite",
    "export_module",
    "main",
    "planned_files",
    "run_export",
]

VERIFY_BATCHES = (1, 3)  # batches a dynamic-batch file is verified at


class IOWrapper(nn.Module):
    """Official I/O around a network: the outputs as one flat tuple (named tuples and single tensors
    alike)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result: Any = self.module(*inputs)
        return tuple(result) if isinstance(result, tuple) else (result,)


def is_grid_sample_node(node: Any) -> bool:
    """Nodes of a grid sample: the native op, or the ``grid_sample`` scope of the decomposed one."""
    return node.op_type in ("GridSample", "GridSample3D") or "grid_sample" in node.name.lower()


def convert_to_fp16(model: Any) -> Any:
    """float32 graph -> float16 compute with float32 inputs/outputs; grid sampling stays float32.

    Uses onnxruntime's float16 converter (shipped with onnxruntime), which keeps inputs that must stay float32
    (e.g. Resize scales) and wraps each blocked node in casts. Casts between two blocked nodes would round
    their float32 values through float16, so those round trips are removed again, and the nodes are re-sorted.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    blocked = [node.name for node in model.graph.node if is_grid_sample_node(node)]
    model = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=[*DEFAULT_OP_BLOCK_LIST, "GridSample"],
        node_block_list=blocked,
    )
    _remove_round_trip_casts(model.graph)
    _sort_topologically(model.graph)
    return model


def _remove_round_trip_casts(graph: Any) -> int:
    """Drop Cast(float32) of Cast(float16) of a float32 value: consumers read the float32 value directly."""
    from onnx import TensorProto

    producer = {out: node for node in graph.node for out in node.output}
    graph_outputs = {v.name for v in graph.output}

    def cast_to(node: Any) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    removed, rename = 0, {}
    for node in graph.node:
        half = producer.get(node.input[0]) if node.input else None
        if cast_to(node) != TensorProto.FLOAT or half is None or cast_to(half) != TensorProto.FLOAT16:
            continue
        source = producer.get(half.input[0])
        if source is None or not is_grid_sample_node(source) or node.output[0] in graph_outputs:
            continue
        rename[node.output[0]] = half.input[0]
        removed += 1
    if not removed:
        return 0
    kept = [n for n in graph.node if not (n.op_type == "Cast" and n.output[0] in rename)]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    used = {name for n in kept for name in n.input} | graph_outputs
    kept = [
        n
        for n in kept
        if not (n.op_type == "Cast" and cast_to(n) == TensorProto.FLOAT16 and n.output[0] not in used)
    ]
    del graph.node[:]
    graph.node.extend(kept)
    return removed


def _sort_topologically(graph: Any) -> None:
    """Order nodes so that every input is produced before use (the fp16 converter appends its casts).

    Kahn's algorithm, keeping the original order among ready nodes.
    """
    import heapq

    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    waiting = [0] * len(nodes)
    consumers: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for source in {producer[name] for name in node.input if name in producer}:
            waiting[i] += 1
            consumers.setdefault(source, []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in consumers.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise ExportError("the fp16 graph has a cycle; export with precision=fp32")
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


class HubertExportModule(nn.Module):
    """transformers HuBERT -> ``encoding_out`` (1, T, 1024), the last hidden state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=input_values).last_hidden_state


def build_network(
    name: str,
    model: ModelConfig,
    motion: MotionConfig,
    *,
    grid_sample: nn.Module | None = None,
    guidance_weight: float = 2.0,
    hubert_path: str | None = None,
) -> nn.Module:
    """The float32 torch module of ``name`` as ``model`` describes it (checkpoint, or the pipeline's
    seeds)."""
    from ditto_research.checkpoints import CheckpointRoot
    from ditto_research.models import NETWORK_NAMES, load_network

    if name == "hubert":
        return _load_hubert(hubert_path)
    kwargs: dict[str, Any] = {}
    if grid_sample is not None and name == "warp_network":
        kwargs["grid_sample"] = grid_sample
    if name == "lmdm":
        kwargs["guidance_weight"] = guidance_weight
    if model.name == "ditto":
        root = CheckpointRoot(Path(model.checkpoint_root))
        path = root.model_path(name, model.lmdm_file if name == "lmdm" else None)
        return load_network(name, path, "cpu", **kwargs)
    if name == "lmdm":
        kwargs.update(cond_dim=motion.cond_dim, seq_frames=motion.seq_frames)
    seed = model.seed + NETWORK_NAMES.index(name)
    return load_network(name, None, "cpu", seed=seed, tiny=model.name == "tiny", **kwargs)


def _load_hubert(path: str | None) -> nn.Module:
    from ditto_research.errors import CheckpointError, ConfigError

    try:
        from transformers import HubertModel
    except ImportError as e:
        raise ConfigError(
            "exporting hubert needs the optional 'transformers' package: pip install transformers"
        ) from e
    if not path or not (Path(path) / "config.json").is_file():
        raise CheckpointError(f"hubert_path={path} is not a transformers HuBERT folder (no config.json)")
    model = HubertModel.from_pretrained(str(path), attn_implementation="eager")
    return HubertExportModule(model.eval())


def _dynamic_axes(io: NetworkIO, dynamic_batch: bool) -> dict[str, dict[int, str]] | None:
    axes: dict[str, dict[int, str]] = {}
    if dynamic_batch:
        axes = {spec.name: {0: "batch"} for spec in (*io.inputs, *io.outputs) if spec.batched}
    if io.name == "hubert":  # any chunk length, as the original's hubert.onnx
        axes.setdefault("input_values", {})[1] = "samples"
        axes.setdefault("encoding_out", {})[1] = "frames"
    return axes or None


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence stdout, the C++ level included (the legacy exporter dumps the whole graph there on failure)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(StringIO()):
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def export_module(
    module: nn.Module,
    name: str | NetworkIO,
    path: str | Path,
    inputs: Sequence[torch.Tensor],
    *,
    opset: int = 20,
    dynamic_batch: bool = False,
    fp16: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Trace ``module`` (official I/O order) into ``path`` with the official names; written atomically.

    ``name``: a network, a graph of the LMDM pair, or its interface. ``fp16`` converts the traced float32
    graph with :func:`convert_to_fp16` (tracing in half precision is not possible on the CPU: several CPU
    kernels have no float16 version).
    """
    import onnx

    io = name if isinstance(name, NetworkIO) else get_graph_io(name)
    name = io.name
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        # Tracer / legacy-exporter notices and the exporter's graph dump on failure: the file is verified
        # anyway, and a failure is reported as one ExportError line.
        with warnings.catch_warnings(), torch.no_grad(), _quiet_stdout():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(inputs),
                str(partial),
                dynamo=False,
                opset_version=opset,
                input_names=list(io.input_names),
                output_names=list(io.output_names),
                dynamic_axes=_dynamic_axes(io, dynamic_batch),
                do_constant_folding=True,
            )
        model = onnx.load(str(partial))
        if fp16:
            model = convert_to_fp16(model)
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = f"{METADATA_PREFIX}{key}", str(value)
        onnx.save(model, str(partial))
        os.replace(partial, path)
    except DittoError:
        raise
    except Exception as e:  # the exporter raises many types (RuntimeError, SymbolicValueError, ...)
        first = (str(e).strip().splitlines() or [""])[0]
        first = first if len(first) <= 200 else first[:200] + "..."
        raise ExportError(f"exporting {name} to {path} failed: {type(e).__name__}: {first}") from e
    finally:
        partial.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class ExportResult:
    name: str
    path: Path
    reports: tuple[VerifyReport, ...]


def _export_one(name: str, cfg: ExportConfig, out_dir: Path) -> ExportResult:
    fp16 = cfg.precision == "fp16" and name not in FP32_NETWORKS
    reference = build_network(
        name, cfg.model, cfg.motion, guidance_weight=cfg.lmdm_guidance_weight, hubert_path=cfg.hubert_path
    )
    network = reference
    if name == "warp_network":  # the sampler as a module: its nodes get a "grid_sample" scope
        network = build_network(name, cfg.model, cfg.motion, grid_sample=make_grid_sample(cfg.grid_sample))
    wrapped = IOWrapper(network).eval()
    inputs = example_inputs(name, reference, batch=1, seed=cfg.verify_seed, image_size=cfg.image_size)
    metadata = {"precision": "fp16" if fp16 else "fp32", "model": cfg.model.name, "opset": str(cfg.opset)}
    if name == "warp_network":
        metadata["grid_sample"] = cfg.grid_sample
    if name == "lmdm":
        metadata["guidance_weight"] = repr(float(cfg.lmdm_guidance_weight))
    path = out_dir / get_graph_io(name).onnx_file
    export_module(
        wrapped,
        name,
        path,
        inputs,
        opset=cfg.opset,
        dynamic_batch=cfg.dynamic_batch,
        fp16=fp16,
        metadata={**metadata, "dynamic_batch": str(cfg.dynamic_batch).lower()},
    )
    reports: list[VerifyReport] = []
    if cfg.verify:
        for batch in VERIFY_BATCHES if cfg.dynamic_batch else (1,):
            check = example_inputs(
                name, reference, batch=batch, seed=cfg.verify_seed + 1, image_size=cfg.image_size
            )
            reports.append(verify_export(path, name, reference, check, cfg.verify_tolerance))
    return ExportResult(name, path, tuple(reports))


def _export_lmdm_pair(cfg: ExportConfig, out_dir: Path) -> list[ExportResult]:
    """The LMDM as its cached pair: ``lmdm_memory`` then ``lmdm_step``, each traced from its torch module."""
    from ditto_research.backends.lmdm_pair import CachedStepGraph, ConditionMemoryGraph, pair_example_inputs

    lmdm = build_network("lmdm", cfg.model, cfg.motion, guidance_weight=cfg.lmdm_guidance_weight)
    weight = float(cfg.lmdm_guidance_weight)
    metadata = {
        "precision": "fp32",
        "model": cfg.model.name,
        "opset": str(cfg.opset),
        "lmdm_form": "cached",
        "guidance_weight": repr(weight),
        "dynamic_batch": str(cfg.dynamic_batch).lower(),
    }
    results = []
    for graph, module in (("lmdm_memory", ConditionMemoryGraph(lmdm)), ("lmdm_step", CachedStepGraph(lmdm))):
        io = LMDM_PAIR_IO[graph]
        path = out_dir / io.onnx_file
        inputs = pair_example_inputs(graph, lmdm, batch=1, seed=cfg.verify_seed, guidance_weight=weight)
        export_module(
            IOWrapper(module).eval(),
            io,
            path,
            inputs,
            opset=cfg.opset,
            dynamic_batch=cfg.dynamic_batch,
            metadata=metadata,
        )
        reports: list[VerifyReport] = []
        if cfg.verify:
            for batch in VERIFY_BATCHES if cfg.dynamic_batch else (1,):
                check = pair_example_inputs(
                    graph, lmdm, batch=batch, seed=cfg.verify_seed + 1, guidance_weight=weight
                )
                reports.append(verify_export(path, io, module, check, cfg.verify_tolerance))
        results.append(ExportResult(graph, path, tuple(reports)))
    return results


def _writable_folder(out_dir: Path) -> None:
    """Create ``out_dir`` (and check it takes files) before any export work; ExportError in one line."""
    error = folder_write_error(out_dir)
    if error is not None:
        raise ExportError(
            f"cannot write to output_dir={out_dir} ({error.strerror or error}); choose a writable folder"
        ) from error


def planned_files(cfg: ExportConfig) -> tuple[list[str], list[str]]:
    """The file names an export of ``cfg`` writes into ``output_dir``, and those it removes there (an earlier
    cached LMDM pair, which would shadow a new guided_step LMDM in the backends)."""
    written: list[str] = []
    for name in cfg.all_networks:
        if name != "lmdm" or cfg.lmdm_form in ("guided_step", "both"):
            written.append(get_graph_io(name).onnx_file)
        if name == "lmdm" and cfg.lmdm_form in ("cached", "both"):
            written.extend(io.onnx_file for io in LMDM_PAIR_IO.values())
    removed = []
    if "lmdm" in cfg.all_networks and cfg.lmdm_form == "guided_step":
        removed = [io.onnx_file for io in LMDM_PAIR_IO.values()]
    return written, removed


def check_overwrite(cfg: ExportConfig, out_dir: Path) -> None:
    """Without ``overwrite``, an ExportError naming the files of ``out_dir`` the export would replace or
    remove (the user's, or an earlier export's: either way not ours to destroy silently)."""
    if cfg.overwrite:
        return
    written, removed = planned_files(cfg)
    taken = [name for name in (*written, *removed) if (out_dir / name).exists()]
    if taken:
        shown = ", ".join(taken[:5]) + (f" and {len(taken) - 5} more" if len(taken) > 5 else "")
        raise ExportError(
            f"output_dir={out_dir} already holds {shown}; pass overwrite=true to replace them or choose "
            "another output_dir"
        )


def run_export(cfg: ExportConfig, log: Any = print) -> list[ExportResult]:
    """Export (and verify) every requested network; returns what was written.

    Files that ``output_dir`` already holds under the names of the export are refused before any work unless
    ``overwrite``. Every file is written and verified in a hidden staging folder inside ``output_dir`` first
    and moved into place only when all of them succeeded: an export that fails (or is stopped) half way adds
    nothing to ``output_dir`` and leaves what was there untouched.
    """
    out_dir = resolve_output_dir(cfg)
    check_overwrite(cfg, out_dir)
    if cfg.model.name == "ditto":
        from ditto_research.checkpoints import check_root

        check_root(cfg.model.checkpoint_root, ("models",), lmdm_file=cfg.model.lmdm_file)
    _writable_folder(out_dir)
    staging = out_dir / f".export.{os.getpid()}-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        staged: list[ExportResult] = []
        for name in cfg.all_networks:
            if name != "lmdm" or cfg.lmdm_form in ("guided_step", "both"):
                staged.append(_export_one(name, cfg, staging))
            if name == "lmdm" and cfg.lmdm_form in ("cached", "both"):
                staged.extend(_export_lmdm_pair(cfg, staging))
        results = []
        for result in staged:  # every network exported and verified: publish
            target = out_dir / result.path.name
            os.replace(result.path, target)
            results.append(ExportResult(result.name, target, result.reports))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for name in planned_files(cfg)[1]:  # a pair left from an earlier export would shadow the new LMDM
        if (out_dir / name).is_file():
            (out_dir / name).unlink()
            log(f"removed {out_dir / name} (an earlier cached LMDM pair; lmdm_form=guided_step)")
    for result in results:
        log(f"wrote {result.path}")
        for report in result.reports:
            log(f"  verified {report.line()}")
    return results


register_export_configs()

# A stopped export removes its staging folder: nothing half written.
APP = HydraApp("export", stopped="nothing written to the output folder")


@APP.main
def main(cfg: DictConfig) -> None:
    run_export(to_config(cfg, ExportConfig))


if __name__ == "__main__":
    APP.run(main)
