"""LMDM window time: the fast path vs ``backend.lmdm_order=reference`` (the original's operation order).

    python benchmarks/lmdm_order.py [--steps 50] [--runs 3] [--threads 2]

One window = 80 frames sampled with the reference DDIM through the pipeline's window sampler on a full-size
LMDM with random weights (``model=untrained``'s seed). The two orders alternate window by window (each draws
the same noise), so load changes hit them alike; the median of ``--runs`` windows after one warm-up is printed
with the two outputs' max relative difference (float32 rounding: the same function).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lmdm_backends import _uptime, time_windows  # noqa: E402  (a sibling script)


def main(argv: list[str] | None = None) -> int:
    from ditto_research.backends.pytorch import load_torch_network
    from ditto_research.diffusion.noise import make_noise
    from ditto_research.diffusion.samplers import make_window_sampler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    runners = {order: load_torch_network("lmdm", seed=5, lmdm_order=order) for order in ("fast", "reference")}
    gen = torch.Generator().manual_seed(0)
    kp_cond = torch.randn((1, 265), generator=gen)
    cond = torch.randn((1, 80, runners["fast"].cond_dim), generator=gen)
    outputs: dict[str, torch.Tensor] = {}

    def sampler(order: str):
        def run() -> torch.Tensor:
            window = make_window_sampler(
                runners[order], "ddim", steps=args.steps, generator=make_noise("torch", 1)
            )
            outputs[order] = window(kp_cond, cond)
            return outputs[order]

        return run

    print(f"before: {_uptime()}", file=sys.stderr)
    ms = time_windows({order: sampler(order) for order in runners}, args.runs)
    print(f"after:  {_uptime()}", file=sys.stderr)
    diff = float((outputs["fast"] - outputs["reference"]).abs().max() / outputs["reference"].abs().max())
    print(
        f"LMDM window (80 frames, ddim {args.steps} steps, full size, fp32, {args.threads} threads, "
        f"median of {args.runs})"
    )
    print("| lmdm_order | ms / window | ms / frame | reference / fast |")
    print("| --- | --- | --- | --- |")
    for order in ("fast", "reference"):
        print(f"| {order} | {ms[order]:.0f} | {ms[order] / 80:.1f} | {ms[order] / ms['fast']:.2f} |")
    print(f"max rel difference between the two windows: {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
