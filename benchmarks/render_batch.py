"""Warp and decode ms per frame at batch 1 / 2 / 4 (full size, random weights), interleaved in one run.

    python benchmarks/render_batch.py [--batches 1,2,4] [--runs 3] [--threads 2] [--device cpu] [--tiny]
    python benchmarks/render_batch.py --memory [--batches 1,2,4]      # peak memory of one call per batch

Each round times every batch size once (warp, then decode on its output), so load changes hit them alike; the
median per frame over ``--runs`` rounds after a warm-up is printed, with the ratio to batch 1. ``--memory``
runs each batch size in a child process of its own and prints how far one warp + decode call raises the
peak memory over the loaded networks (peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    from ditto_research.backends.pytorch import load_torch_network

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--memory", action="store_true", help="peak memory per batch size instead of time")
    parser.add_argument("--one-batch", type=int, default=0, help=argparse.SUPPRESS)  # a --memory child
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    if args.memory and not args.one_batch:
        return memory_table(args, batches)
    warp = load_torch_network("warp_network", args.device, seed=2, tiny=args.tiny)
    decoder = load_torch_network("decoder", args.device, seed=3, tiny=args.tiny)
    module = warp.module
    gen = torch.Generator().manual_seed(0)
    volume = torch.randn((1, module.reshape_channel, module.reshape_depth, 64, 64), generator=gen)
    kp = torch.rand((1, 21, 3), generator=gen) * 1.2 - 0.6

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    if args.one_batch:
        return peak_of_one_call(args, warp, decoder, volume, kp, sync)

    times: dict[tuple[str, int], list[float]] = {}
    for round_ in range(args.runs + 1):  # the first round warms up
        for batch in batches:
            f_s = volume.expand(batch, *volume.shape[1:]).to(args.device)
            x_s, x_d = (
                kp.expand(batch, 21, 3).to(args.device),
                (kp + 0.02).expand(batch, 21, 3).to(args.device),
            )
            with torch.no_grad():
                sync()
                t0 = time.perf_counter()
                feature = warp(f_s, x_s, x_d)
                sync()
                t1 = time.perf_counter()
                decoder(feature)
                sync()
                t2 = time.perf_counter()
            if round_:
                times.setdefault(("warp", batch), []).append((t1 - t0) * 1000 / batch)
                times.setdefault(("decode", batch), []).append((t2 - t1) * 1000 / batch)
    size = "tiny" if args.tiny else "full size"
    print(
        f"warp / decode ms per frame ({size}, {args.device}, {args.threads} threads, median of {args.runs})"
    )
    print("| batch | warp ms/frame | decode ms/frame | warp+decode | vs batch 1 |")
    print("| --- | --- | --- | --- | --- |")
    base = statistics.median(times[("warp", batches[0])]) + statistics.median(times[("decode", batches[0])])
    for batch in batches:
        w, d = statistics.median(times[("warp", batch)]), statistics.median(times[("decode", batch)])
        print(f"| {batch} | {w:.0f} | {d:.0f} | {w + d:.0f} | {(w + d) / base:.2f} |")
    return 0


def peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_of_one_call(args, warp, decoder, volume, kp, sync) -> int:
    """(a --memory child) print the loaded networks' peak, then the peak after one call at ``--one-batch``."""
    batch = args.one_batch
    f_s = volume.expand(batch, *volume.shape[1:]).contiguous().to(args.device)
    x_s = kp.expand(batch, 21, 3).contiguous().to(args.device)
    sync()
    before = peak_mb(args.device)
    with torch.no_grad():
        decoder(warp(f_s, x_s, x_s + 0.02))
    sync()
    print(f"{before:.1f} {peak_mb(args.device):.1f}")
    return 0


def memory_table(args, batches: list[int]) -> int:
    """One child process per batch size, so each peak is its own."""
    size = "tiny" if args.tiny else "full size"
    kind = "peak GPU memory allocated" if args.device.startswith("cuda") else "peak RSS"
    print(f"{kind} of one warp + decode call ({size}, {args.device}, MB over the loaded networks)")
    print("| batch | networks + inputs MB | peak MB | call adds MB | per frame MB |")
    print("| --- | --- | --- | --- | --- |")
    for batch in batches:
        cmd = [sys.executable, __file__, "--one-batch", str(batch), "--device", args.device]
        cmd += ["--threads", str(args.threads)] + (["--tiny"] if args.tiny else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
        before, peak = float(out[-2]), float(out[-1])
        print(
            f"| {batch} | {before:.0f} | {peak:.0f} | {peak - before:.0f} | {(peak - before) / batch:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
