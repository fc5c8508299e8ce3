"""Per-network latency, torch vs onnxruntime (fp32) at full size: \
``python -m ditto_research.export.bench_backends``.

    python -m ditto_research.export.bench_backends [--runs 5] [--threads N] [--onnx-dir DIR] \\
        [--write-docs docs/backends.md]

Networks have seeded random weights (model=untrained: same compute as the official ones). Without
``--onnx-dir`` they are exported (unverified, for speed) into a temporary folder first. Each call is timed
after one warm-up; the median of ``--runs`` calls is reported. The machine may be shared: ``uptime`` is
printed with the table, and the two backends alternate call by call so load changes hit both alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ditto_research.backends import RENDER_NETWORKS, example_inputs, make_backend

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
# Per frame of video: stitch + warp + decode. Per 80-frame window: 50 guided LMDM steps (DDIM 50, the
# default).
FRAME_NETWORKS = ("stitch_network", "warp_network", "decoder")


@dataclass(frozen=True)
class Timing:
    network: str
    torch_ms: float
    onnx_ms: float

    @property
    def speedup(self) -> float:
        return self.torch_ms / self.onnx_ms if self.onnx_ms > 0 else float("nan")


def _median_ms(fns: dict[str, Callable[[], Any]], runs: int) -> dict[str, float]:
    for fn in fns.values():
        fn()  # warm-up (allocations, onnxruntime's first-run work)
    samples: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(runs):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[key].append((time.perf_counter() - start) * 1000)
    return {key: statistics.median(values) for key, values in samples.items()}


def benchmark(onnx_dir: Path, runs: int, threads: int, networks: tuple[str, ...]) -> list[Timing]:
    torch.set_num_threads(threads)
    torch_backend = make_backend("pytorch", model_name="untrained")
    onnx_backend = make_backend("onnx", onnx_dir=onnx_dir, model_name="untrained", num_threads=threads)
    timings = []
    for name in networks:
        torch_runner, onnx_runner = torch_backend.load(name), onnx_backend.load(name)
        inputs = example_inputs(name, torch_runner.module)
        calls = {
            "torch": lambda r=torch_runner, x=inputs: r(*x),
            "onnx": lambda r=onnx_runner, x=inputs: r(*x),
        }
        result = _median_ms(calls, runs)
        timings.append(Timing(name, result["torch"], result["onnx"]))
        print(
            f"{name:22s} torch {result['torch']:9.1f} ms   onnxruntime {result['onnx']:9.1f} ms", flush=True
        )
    return timings


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uptime unavailable"


def render_table(timings: list[Timing], runs: int, threads: int, uptime: str) -> str:
    import onnxruntime

    setup = (
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, {threads} "
        f"threads each; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; median of {runs} "
        "calls after a warm-up."
    )
    lines = [
        setup,
        f"Load while measuring: `{uptime}`",
        "",
        "| network (batch 1, fp32) | torch ms | onnxruntime ms | torch / ort |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {t.network} | {t.torch_ms:.1f} | {t.onnx_ms:.1f} | {t.speedup:.2f} |" for t in timings]
    by_name = {t.network: t for t in timings}
    if all(n in by_name for n in (*FRAME_NETWORKS, "lmdm")):
        frame = {k: sum(getattr(by_name[n], k) for n in FRAME_NETWORKS) for k in ("torch_ms", "onnx_ms")}
        lmdm = {k: 50 * getattr(by_name["lmdm"], k) / 80 for k in ("torch_ms", "onnx_ms")}
        total = {k: frame[k] + lmdm[k] for k in frame}
        lines += [
            "",
            "Derived per video frame (one stage after another; the pipeline overlaps its stages on threads):",
            "",
            "| | torch | onnxruntime |",
            "|---|---:|---:|",
            f"| stitch + warp + decode, ms/frame | {frame['torch_ms']:.0f} | {frame['onnx_ms']:.0f} |",
            (
                f"| LMDM, 50 guided steps per 80 frames, ms/frame | {lmdm['torch_ms']:.0f} | "
                f"{lmdm['onnx_ms']:.0f} |"
            ),
            f"| sequential fps bound | {1000 / total['torch_ms']:.2f} | {1000 / total['onnx_ms']:.2f} |",
        ]
    return "\n".join(lines)


def write_docs(path: Path, table: str) -> None:
    text = path.read_text() if path.is_file() else f"# Backends\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ditto_research.export.bench_backends", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--onnx-dir", type=Path, default=None, help="untrained fp32 exports to reuse")
    parser.add_argument("--networks", nargs="+", default=list(RENDER_NETWORKS), choices=RENDER_NETWORKS)
    parser.add_argument("--write-docs", type=Path, default=None, help="put the table into this markdown file")
    args = parser.parse_args(argv)
    uptime_before = _uptime()
    print(uptime_before)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = args.onnx_dir
        if onnx_dir is None:
            from ditto_research.config.schema import ModelConfig
            from ditto_research.export.config import ExportConfig
            from ditto_research.export.onnx import run_export

            onnx_dir = Path(tmp)
            print(f"exporting untrained networks to {onnx_dir} ...", flush=True)
            run_export(
                ExportConfig(
                    model=ModelConfig(name="untrained"),
                    output_dir=str(onnx_dir),
                    networks=list(args.networks),
                    verify=False,
                )
            )
        timings = benchmark(onnx_dir, args.runs, args.threads, tuple(args.networks))
    uptime = _uptime()
    table = render_table(timings, args.runs, args.threads, uptime)
    print(uptime)
    print(table)
    if args.write_docs:
        write_docs(args.write_docs, table)
        print(f"wrote the table into {args.write_docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
