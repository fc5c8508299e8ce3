"""Quality-metric benchmark: cost per frame of each metric, and the peak memory of scoring a long clip.

    python benchmarks/score.py                 # per-metric ms/frame on the two real clips, 1-minute memory
    python benchmarks/score.py --seconds 60 --skip-costs

Per metric: the median over 40 frames of the real clips in ``../shared/real_clips`` (412x454 and 1920x1080),
the prediction a noisy copy of the reference. The networks whose weights cannot be had here (InceptionV3, I3D,
LPIPS, ArcFace, SyncNet) are not timed. Memory: ``evaluate.quality.score_pair`` on a clip looped to
``--seconds`` against a noisy copy, in a child process (its VmHWM), with the weights-free metrics.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real_clips"

CHILD = r"""
import json, sys, time
from ditto_research.evaluate.quality import QualityScorers, score_pair
from ditto_research.memory import peak_rss_mb
start = time.perf_counter()
result = score_pair(sys.argv[1], sys.argv[2], QualityScorers())
row = {"frames": result.frames, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}
print(json.dumps(row | {"psnr": result.metrics["psnr"], "lmd_mouth": result.metrics["lmd_mouth"]}))
"""


def ffmpeg(*args: str) -> None:
    from ditto_research.media.ffmpeg import find_ffmpeg

    subprocess.run([find_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def costs(clip: Path) -> dict[str, float]:
    import numpy as np

    from ditto_research.evaluate.metrics.fidelity import psnr, ssim
    from ditto_research.evaluate.metrics.landmarks import LandmarkDistance
    from ditto_research.evaluate.metrics.sync_proxy import mouth_opening_series
    from ditto_research.media.source import stream_video

    with stream_video(clip, max_size=0, fps=25) as video:
        refs = [f for _, f in zip(range(40), video.frames())]
    rng = np.random.default_rng(0)
    preds = [np.clip(f + rng.normal(0, 8, f.shape), 0, 255).astype(np.uint8) for f in refs]
    out = {"size": f"{refs[0].shape[1]}x{refs[0].shape[0]}"}

    def per_frame(fn) -> float:
        times = []
        for p, r in zip(preds, refs):
            start = time.perf_counter()
            fn(p, r)
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times[2:])

    out["psnr_ms"] = per_frame(psnr)
    out["ssim_ms"] = per_frame(ssim)
    with LandmarkDistance() as lmd:
        out["lmd_ms"] = per_frame(lmd.add)  # MediaPipe on both frames, face tracked
    start = time.perf_counter()
    mouth_opening_series(preds)
    out["sync_proxy_ms"] = 1000 * (time.perf_counter() - start) / len(preds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--skip-costs", action="store_true")
    args = parser.parse_args()
    clips = sorted(REAL.glob("*.mp4"))
    if not clips:
        sys.exit(f"error: no clips in {REAL}")
    if not args.skip_costs:
        print("| frame size | PSNR ms | SSIM ms | LMD ms (both frames) | sync proxy ms |")
        print("|---|---:|---:|---:|---:|")
        for clip in clips:
            c = costs(clip)
            print(
                f"| {c['size']} | {c['psnr_ms']:.1f} | {c['ssim_ms']:.1f} | {c['lmd_ms']:.1f} | "
                f"{c['sync_proxy_ms']:.1f} |",
                flush=True,
            )
    with tempfile.TemporaryDirectory() as tmp:
        ref, pred = Path(tmp) / "ref.mp4", Path(tmp) / "pred.mp4"
        loops = int(args.seconds / 7) + 1
        ffmpeg(
            "-stream_loop",
            str(loops),
            "-i",
            str(clips[0]),
            "-t",
            str(args.seconds),
            "-c:v",
            "libx264",
            str(ref),
        )
        ffmpeg("-i", str(ref), "-vf", "noise=alls=8:allf=t", "-c:v", "libx264", str(pred))
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(pred), str(ref)], capture_output=True, text=True, check=True
        )
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"\n{args.seconds:g} s clip ({row['frames']} frames, {clips[0].name}): "
            f"scored in {row['seconds']:.0f} s "
            f"({1000 * row['seconds'] / row['frames']:.0f} ms/frame, weights-free metrics), peak RSS "
            f"{row['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
