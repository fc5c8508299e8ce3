"""Offline pipeline benchmark: per-stage ms/frame, end-to-end fps, pipeline efficiency and peak RSS.

    python benchmarks/offline_pipeline.py --model untrained --seconds 2            # full-size networks
    python benchmarks/offline_pipeline.py --model tiny --seconds 60 --source video  # memory vs audio length
    python benchmarks/offline_pipeline.py --model untrained --backend onnx --onnx-dir DIR   # onnxruntime

Pipeline efficiency = end-to-end fps / fps of the slowest render stage run alone (measured first, same
threads). Peak RSS is the whole process's maximum resident set (run one configuration per process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ditto_research.examples import example_source
from ditto_research.media.writer import VideoWriter
from ditto_research.memory import peak_rss_mb
from ditto_research.pipeline import TalkingHeadSession


def write_speech_elsewhere(path: Path, seconds: float) -> Path:
    """Synthesize the test speech in a child process: its float64 temporaries (~40 MB for 60 s) would
    otherwise raise this process's peak RSS before the run and blur the memory-vs-length comparison."""
    code = (
        "import sys; from ditto_research.audio.io import write_wav; "
        "from ditto_research.examples import synthetic_speech; "
        "write_wav(sys.argv[1], synthetic_speech(float(sys.argv[2])))"
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(seconds)], check=True)
    return path


def write_video(path: Path, seconds: float) -> Path:
    import cv2

    face = cv2.cvtColor(cv2.imread(str(example_source())), cv2.COLOR_BGR2RGB)
    with VideoWriter(path, fps=25) as w:
        for i in range(int(seconds * 25)):
            w.write(np.roll(face, int(4 * np.sin(i / 5)), axis=1))
        w.close()
    return path


def time_alone(fn, runs: int = 3) -> float:
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


@torch.no_grad()
def stages_alone_ms(session: TalkingHeadSession, threads: int) -> dict[str, float]:
    """Warp and decode timed alone on realistic inputs (ms per frame)."""
    if threads > 0:
        torch.set_num_threads(threads)
    nets = session.networks
    src = session.register(example_source())
    f_s = src.appearance.get(0)
    kp = torch.from_numpy(src.frames[0].x_s_info["kp"].reshape(1, 21, 3))
    feature = nets.warp_network(f_s, kp, kp)
    return {
        "warp": 1000 * time_alone(lambda: nets.warp_network(f_s, kp, kp)),
        "decode": 1000 * time_alone(lambda: nets.decoder(feature)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="untrained", choices=["untrained", "tiny"])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--source", default="image", choices=["image", "video"])
    parser.add_argument("--source-seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads per render stage, backend.num_threads (0: the library default, every core)",
    )
    parser.add_argument("--skip-alone", action="store_true", help="do not time stages alone")
    parser.add_argument("--backend", default="pytorch", choices=["pytorch", "onnx"])
    parser.add_argument(
        "--onnx-dir",
        type=Path,
        default=None,
        help="exports of the same model for --backend onnx "
        "(python -m ditto_research.export.onnx model=untrained)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    overrides = [
        f"model={args.model}",
        "audio_encoder=untrained",
        "face=mediapipe",
        f"sampler.steps={args.steps}",
        "progress=false",
        "overwrite=true",
        f"backend={args.backend}",
        f"backend.num_threads={args.threads}",
    ]
    if args.onnx_dir is not None:
        overrides.append(f"backend.onnx_dir={args.onnx_dir}")
    session = TalkingHeadSession.from_overrides(overrides)
    alone = {} if args.skip_alone else stages_alone_ms(session, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        audio = write_speech_elsewhere(Path(tmp) / "speech.wav", args.seconds)
        source = (
            write_video(Path(tmp) / "src.mp4", args.source_seconds)
            if args.source == "video"
            else example_source()
        )
        rss_before = peak_rss_mb()
        result = session.generate(source, audio, Path(tmp) / "out.mp4")
    numbers = {
        "model": args.model,
        "backend": args.backend,
        "audio_s": args.seconds,
        "source": args.source,
        "frames": result.frames,
        "threads_per_render_stage": args.threads or torch.get_num_threads(),
        "end_to_end_s": round(result.seconds, 2),
        "end_to_end_fps": round(result.fps, 4),
        "render_fps": round(result.render_fps, 4),
        "register_s": round(result.register_s, 2),
        "load_s": round(result.load_s, 2),
        "stage_ms_per_frame_in_pipeline": {k: round(v, 1) for k, v in result.stage_ms_per_frame.items()},
        "stage_ms_alone": {k: round(v, 1) for k, v in alone.items()},
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "peak_rss_before_run_mb": round(rss_before, 1),
        "load_average": os.getloadavg(),
    }
    if alone:
        slowest = max(alone.values())
        numbers["slowest_stage_alone_fps"] = round(1000 / slowest, 4)
        numbers["pipeline_efficiency"] = round(result.fps / (1000 / slowest), 3)
    print(json.dumps(numbers, indent=2))
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
