"""Data-preparation benchmark: frames per second of each stage and end to end, peak memory against the
video's length, decoder processes per video.

    python benchmarks/prepare.py --model tiny --minutes 1 10          # memory must not grow with the length
    python benchmarks/prepare.py --model untrained --minutes 0.2      # full-size networks
    python benchmarks/prepare.py --model tiny --minutes 0.2 --flip    # the mirrored copy as well

Each run is a child process of its own (peak RSS = that process's VmHWM), preparing a talking video made by
looping a real clip of ``../shared/real_clips`` (412x454, one person, speech) to the length asked for; clips
are split every ``prepare.max_clip_s`` (120 s) as the job does. Prints one JSON line per run and a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CLIP = (
    Path(__file__).resolve().parents[1].parent / "shared" / "real_clips" / "-1wCGAxqT_4+000000_000177+p0.mp4"
)

CHILD = r"""
import json, sys, time
from ditto_research.config import compose, to_config
from ditto_research.memory import peak_rss_mb
from ditto_research.pipeline.engine import Engine
from ditto_research.prepare.config import PrepareConfig, register_prepare_configs
from ditto_research.prepare.video import PrepareSettings, PreparedSegment, VideoStats, prepare_segments

video, model, flip = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
register_prepare_configs()
cfg = to_config(compose("prepare", [f"model={model}", "face=mediapipe", "audio_encoder=untrained",
                                    "progress=false", "videos=x", "out=y"]), PrepareConfig)
engine = Engine(cfg)
engine.networks, engine.frontend  # built before timing
rss_loaded = peak_rss_mb()
stats, clips, start = VideoStats(), 0, time.perf_counter()
settings = PrepareSettings(flip=flip, max_frames=cfg.prepare.max_frames)
for item in prepare_segments(engine, video, "bench", settings=settings, stats=stats):
    clips += isinstance(item, PreparedSegment)
seconds = time.perf_counter() - start
print(json.dumps({"frames": stats.frames, "clips": clips, "seconds": seconds, "stages": dict(stats.seconds),
                  "decoders": stats.decoders, "rss_loaded_mb": rss_loaded, "peak_rss_mb": peak_rss_mb()}))
"""


def make_video(folder: Path, minutes: float) -> Path:
    from ditto_research.media.ffmpeg import find_ffmpeg

    out = folder / f"talk_{minutes:g}min.mp4"
    loops = int(minutes * 60 / 7.0) + 1
    subprocess.run(
        [find_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", "-stream_loop", str(loops), "-i", str(CLIP),
         "-t", f"{minutes * 60:.3f}", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", str(out)],
        check=True,
    )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny", choices=("tiny", "untrained", "ditto"))
    parser.add_argument("--minutes", type=float, nargs="+", default=[0.2])
    parser.add_argument("--flip", action="store_true")
    args = parser.parse_args()
    if not CLIP.is_file():
        sys.exit(f"error: {CLIP} not found (the benchmark loops a real clip of ../shared/real_clips)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            video = make_video(Path(tmp), minutes)
            result = subprocess.run(
                [sys.executable, "-c", CHILD, str(video), args.model, "1" if args.flip else "0"],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(result.stdout.strip().splitlines()[-1]) | {
                "minutes": minutes,
                "model": args.model,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\nmodel={args.model} flip={args.flip}")
    print(
        "| minutes | frames | clips | end-to-end fps | " + " | ".join(rows[0]["stages"]) + " | peak RSS MB |"
    )
    for row in rows:
        fps = [f"{row['frames'] / s:.0f}" if s > 0 else "-" for s in row["stages"].values()]
        end_to_end = row["frames"] / row["seconds"]
        print(
            f"| {row['minutes']:g} | {row['frames']} | {row['clips']} | {end_to_end:.1f} | "
            + " | ".join(fps)
            + f" | {row['peak_rss_mb']:.0f} (loaded {row['rss_loaded_mb']:.0f}) |"
        )
    print("(stage columns: frames of video per second of that stage; decoder processes per video:",
          ", ".join(str(r["decoders"]) for r in rows) + ")")  # fmt: skip


if __name__ == "__main__":
    main()
