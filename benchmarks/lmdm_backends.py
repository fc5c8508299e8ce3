"""LMDM sampling per window: torch vs the official ONNX guided step vs the cached ONNX pair.

    python -m ditto_research.export.onnx model=untrained networks=[lmdm] lmdm_form=both verify=false \\
        output_dir=/tmp/lmdm_onnx
    python benchmarks/lmdm_backends.py --onnx-dir /tmp/lmdm_onnx [--runs 3] [--threads 2]

One window = 80 frames sampled with ``--sampler`` (default the reference DDIM, 50 steps) through the
pipeline's window sampler (:func:`ditto_research.pipeline.networks.build_window_sampler`):

- torch: the PyTorch LMDM (condition memory once per window, time conditioning once per grid);
- onnxruntime, official step: ``lmdm_v0.4_hubert.onnx``, the whole guided step (condition encoder included)
  at every step;
- onnxruntime, cached pair: ``lmdm_v0.4_hubert_memory.onnx`` once, ``lmdm_v0.4_hubert_step.onnx`` per step.

The weights are the folder's (model=untrained: the pipeline's seeds, so torch computes the same function; the
agreement with torch is printed). The three alternate window by window so load changes hit them alike; the
median of ``--runs`` windows after one warm-up is reported, with ``uptime`` before and after.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["main", "time_windows"]


def time_windows(samplers: dict[str, Callable[[], torch.Tensor]], runs: int) -> dict[str, float]:
    """Median ms per call of each sampler, after one warm-up call each; calls alternate between samplers."""
    for sample in samplers.values():
        sample()
    times: dict[str, list[float]] = {name: [] for name in samplers}
    for _ in range(runs):
        for name, sample in samplers.items():
            start = time.perf_counter()
            sample()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uptime unavailable"


def main(argv: list[str] | None = None) -> int:
    from ditto_research.backends import make_backend
    from ditto_research.backends.base import get_io
    from ditto_research.backends.onnx import OnnxLmdm, lmdm_pair_paths, open_lmdm_pair
    from ditto_research.config.schema import SamplerConfig
    from ditto_research.diffusion.noise import make_noise
    from ditto_research.pipeline.networks import build_window_sampler

    parser = argparse.ArgumentParser(
        prog="python benchmarks/lmdm_backends.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--onnx-dir", type=Path, required=True, help="folder with the official LMDM file and the pair"
    )
    parser.add_argument(
        "--model", default="untrained", choices=("untrained", "tiny"), help="weights of the export"
    )
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    pair = lmdm_pair_paths(args.onnx_dir)
    official_path = args.onnx_dir / get_io("lmdm").onnx_file
    if pair is None or not official_path.is_file():
        print(
            f"error: {args.onnx_dir} needs lmdm_v0.4_hubert.onnx and its cached pair; write them with: "
            f"python -m ditto_research.export.onnx model={args.model} networks=[lmdm] lmdm_form=both "
            f"output_dir={args.onnx_dir}",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    lmdms = {
        "onnxruntime, official guided step": OnnxLmdm("lmdm", official_path, num_threads=args.threads),
        "onnxruntime, cached pair": open_lmdm_pair(*pair, num_threads=args.threads),
    }
    first = next(iter(lmdms.values()))
    torch_lmdm = make_backend(
        "pytorch", model_name=args.model, cond_dim=first.cond_dim, seq_frames=first.seq_frames
    ).load("lmdm")
    lmdms = {"torch (condition memory once per window)": torch_lmdm, **lmdms}

    gen = torch.Generator().manual_seed(0)
    kp_cond = torch.randn((1, first.motion_dim), generator=gen)
    cond = torch.randn((1, first.seq_frames, first.cond_dim), generator=gen)
    config = SamplerConfig(name=args.sampler, steps=args.steps)
    samplers = {
        name: build_window_sampler(lmdm, config, make_noise("torch", 1)) for name, lmdm in lmdms.items()
    }
    agreement = {name: sample(kp_cond, cond) for name, sample in samplers.items()}  # first window of each
    reference = next(iter(agreement.values()))

    print(_uptime(), flush=True)
    timings = time_windows(
        {name: (lambda s=sample: s(kp_cond, cond)) for name, sample in samplers.items()}, args.runs
    )
    print(_uptime())
    base = next(iter(timings.values()))
    print(
        f"LMDM window ({first.seq_frames} frames, sampler={args.sampler}, {args.steps} steps, "
        f"model={args.model}, batch 1, fp32, {args.threads} threads; median of {args.runs} windows "
        "after a warm-up)"
    )
    print("| LMDM | ms / window | ms / frame | torch / this | max rel diff vs torch |")
    print("|---|---:|---:|---:|---:|")
    for name, ms in timings.items():
        diff = float((agreement[name] - reference).abs().max() / reference.abs().max())
        print(f"| {name} | {ms:.0f} | {ms / first.seq_frames:.1f} | {base / ms:.2f} | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
