"""Training benchmark: optimizer-step time and samples/s of the motion model, data-loading throughput (it
must not be the bottleneck: at least 10x the step rate), peak memory.

    python benchmarks/train.py                                  # tiny and full size, batch 8 and 32, CPU
    python benchmarks/train.py --models untrained --batches 256 --device cuda --precision bf16-mixed

Each (model, batch) runs in a child process of its own (peak RSS = its VmHWM): the released objective
(:class:`~ditto_research.train.objective.Objective`) on windows of an in-memory synthetic dataset (real
shapes: 80 frames, 265 motion, 1103 condition), AdamW, forward + backward + step, median of ``--steps``
after 3 warm-up steps. Data loading: the same windows through the trainer's own sample stream
(:class:`~ditto_research.train.data.WindowStream`) and a DataLoader with 0 and 2 workers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time
import numpy as np, torch
from torch.utils.data import DataLoader
from ditto_research.data import PreparedClip
from ditto_research.data.clip import CLIP_ARRAYS
from ditto_research.memory import peak_rss_mb
from ditto_research.models import load_network
from ditto_research.motion.conditions import ConditionFlags
from ditto_research.train.data import PositionBatches, WindowStream
from ditto_research.train.objective import Objective

model, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
device, precision = sys.argv[4], sys.argv[5]
rng = np.random.default_rng(0)
def arrays():
    return {k: rng.standard_normal((500, *t)).astype(np.float32) for k, t in CLIP_ARRAYS.items()}
clips = [PreparedClip(f"c{i}", arrays()) for i in range(8)]
stream = WindowStream(
    clips, seq_frames=80, flags=ConditionFlags(), seed=0, num_timesteps=1000, cond_drop_prob=0.2
)

def batches(count):
    return PositionBatches(batch, accumulate=1, world=1, rank=0, start_step=0, max_steps=count)

def load_rate(workers, count=20):
    it = iter(DataLoader(stream, batch_sampler=batches(count + 2), num_workers=workers))
    next(it); next(it)
    start = time.perf_counter()
    for _ in range(count):
        next(it)
    return count * batch / (time.perf_counter() - start)

lmdm = load_network("lmdm", None, seed=0, tiny=model == "tiny", dropout=0.1).to(device).train()
optimizer = torch.optim.AdamW(lmdm.parameters(), lr=1e-4)
objective = Objective()
loader = iter(DataLoader(stream, batch_sampler=batches(steps + 3)))
dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
times = []
for i in range(steps + 3):
    b = {k: v.to(device) for k, v in next(loader).items()}
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
        draws = {"t": b["t"], "noise": b["noise"], "keep_mask": b["keep"]}
        loss = objective(lmdm, b["kp_seq"], b["kp_cond"], b["aud_cond"], **draws)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    torch.nn.utils.clip_grad_norm_(lmdm.parameters(), 1.0)
    optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    if i >= 3:
        times.append(time.perf_counter() - start)
step = statistics.median(times)
row = {"model": model, "batch": batch, "step_ms": step * 1000, "samples_per_s": batch / step}
row |= {"load_samples_per_s_0w": load_rate(0), "load_samples_per_s_2w": load_rate(2)}
row |= {"params_m": sum(p.numel() for p in lmdm.parameters()) / 1e6, "peak_rss_mb": peak_rss_mb()}
print(json.dumps(row))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny", "untrained"], choices=("tiny", "untrained"))
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed", "16-mixed"))
    args = parser.parse_args()
    rows = []
    for model in args.models:
        for batch in args.batches:
            command = [
                sys.executable,
                "-c",
                CHILD,
                model,
                str(batch),
                str(args.steps),
                args.device,
                args.precision,
            ]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\ndevice={args.device} precision={args.precision}")
    print(
        "| model | params (M) | batch | step ms | samples/s | loading samples/s (0 / 2 workers) | x step",
        end="",
    )
    print(" | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["load_samples_per_s_2w"] / r["samples_per_s"]
        print(
            f"| {r['model']} | {r['params_m']:.2f} | {r['batch']} | {r['step_ms']:.0f} | "
            f"{r['samples_per_s']:.0f} | "
            f"{r['load_samples_per_s_0w']:.0f} / {r['load_samples_per_s_2w']:.0f} | {ratio:.1f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
