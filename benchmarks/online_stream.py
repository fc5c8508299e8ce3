"""Online streaming benchmark: first-frame latency, steady-state real-time factor, latency budget, memory.

    python benchmarks/online_stream.py --model untrained --preset quality realtime --seconds 4
    python benchmarks/online_stream.py --model tiny --minutes 30            # RSS over a long stream
    python benchmarks/online_stream.py --model tiny --minutes 30 --no-render   # the stream state only, fast

Latency runs feed the audio at 1x wall-clock speed in 20 ms pieces (as a microphone would) and report, per
preset: the first frame's latency, per-frame latency p50 / p95 / max and the frames that missed their
deadline (see ``ditto_research.pipeline.online``); the budget of the first frame split into the audio
look-ahead the windows need (a property of overlap / chunksize, computed exactly), motion (features + LMDM
window + queues) and rendering; and the mean busy time of each stage per frame. The steady-state real-time
factor comes from a second run fed as fast as the pipeline takes the audio: (time between the first and the
last frame) / (audio time of those frames); below 1 is faster than real time.

The memory run (``--minutes``) streams synthetic speech through the whole pipeline (``model=tiny`` unless
told otherwise), keeping the producer at most six seconds ahead of the frames, and prints the resident set
every ``--report-every`` seconds of audio.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ditto_research.audio.features import ChunkLayout, OnlineChunker
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.errors import DittoError, StageError
from ditto_research.examples import example_source, synthetic_speech
from ditto_research.motion.audio2motion import Audio2MotionSettings
from ditto_research.motion.online import OnlineMotionGenerator
from ditto_research.pipeline.observers import PipelineObserver
from ditto_research.pipeline.online import StreamingSession

AHEAD_S = 6


def rss_mb() -> float:
    """Current resident set of this process (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def lookahead_s(session: StreamingSession, seconds: float) -> tuple[float, float]:
    """Audio look-ahead of the windowing alone (frame 0, mean over frames): how much audio past a frame's own
    40 ms must have arrived before that frame can come out, with an instant LMDM."""
    cfg = session.cfg
    settings = Audio2MotionSettings(
        seq_frames=cfg.motion.seq_frames, overlap_v2=cfg.motion.overlap_v2, fuse_mode="online"
    )
    layout = ChunkLayout.from_chunksize(cfg.mode.chunksize)
    zero_window = torch.zeros(1, settings.seq_frames, 265)
    gen = OnlineMotionGenerator(
        lambda kp, cond: zero_window,
        lambda feats, idx: feats,
        np.zeros(265, np.float32),
        settings,
        np.zeros((settings.overlap_v2, 1), np.float32),
    )
    chunker, waits = OnlineChunker(cfg.mode.chunksize), []
    for end in range(160, int(seconds * SAMPLE_RATE) + 1, 160):  # 10 ms resolution
        for _ in chunker.push(np.zeros(160, np.float32)):
            for _ in gen.push(np.zeros((layout.current, 1), np.float32)):
                waits.append(end / SAMPLE_RATE - (len(waits) + 1) / FPS)  # frames come out in order
    return (waits[0], float(np.mean(waits))) if waits else (float("nan"), float("nan"))


def stream(
    session: StreamingSession, source, audio: np.ndarray, realtime: bool, max_frames: int | None = None
) -> dict:
    """One stream of ``audio`` (cancelled after ``max_frames``); returns emission times, the motion time of
    frame 0 and the session's numbers."""
    motion_t: dict[int, float] = {}
    out_t: list[float] = []

    class FirstMotion(PipelineObserver):
        def on_motion(self, index: int, motion: np.ndarray) -> None:
            if index == 0:
                motion_t.setdefault(0, time.perf_counter())

    session.start(
        source, num_frames=int(np.ceil(audio.shape[0] / SAMPLE_RATE * FPS)), observers=[FirstMotion()]
    )
    step = SAMPLE_RATE // 50 if realtime else SAMPLE_RATE

    def feed() -> None:
        start = time.perf_counter()
        try:
            for first in range(0, audio.shape[0], step):
                piece = audio[first : first + step]
                if realtime:
                    time.sleep(max(0.0, start + (first + piece.shape[0]) / SAMPLE_RATE - time.perf_counter()))
                session.push(piece)
            session.close()
        except (DittoError, StageError):
            pass  # cancelled after max_frames

    feeder = threading.Thread(target=feed)
    t0 = time.perf_counter()
    feeder.start()
    for _ in session.frames():
        out_t.append(time.perf_counter())
        if max_frames is not None and len(out_t) >= max_frames:
            break  # cancels the stream
    feeder.join()
    return {
        "t0": t0,
        "out": out_t,
        "motion0": motion_t.get(0),
        "latency": session.latency,
        "stages": session.stage_ms_per_frame(),
    }


def latency_run(
    model: str,
    preset: str,
    seconds: float,
    device: str,
    threads: int,
    warmup: bool,
    fast_run: bool,
    max_frames: int | None,
) -> dict:
    overrides = [
        f"model={model}",
        "audio_encoder=untrained",
        "face=mediapipe",
        f"+preset={preset}",
        "progress=false",
        f"backend.device={device}",
        f"backend.num_threads={threads}",
    ]
    session = StreamingSession.from_overrides(overrides)
    t = time.perf_counter()
    source = session.engine.register(example_source())
    register_s = time.perf_counter() - t
    if warmup:  # lazy initialisation and first calls of every network
        stream(session, source, synthetic_speech(0.2, seed=1), realtime=False)
    audio = synthetic_speech(seconds)
    rt = stream(session, source, audio, realtime=True, max_frames=max_frames)
    fast = stream(session, source, audio, realtime=False, max_frames=max_frames) if fast_run else rt
    session.release()

    first_wait, mean_wait = lookahead_s(session, 20.0)
    report = rt["latency"]
    frame0_arrival = rt["t0"] + 1 / FPS  # frame 0's 640 samples are complete after 40 ms (20 ms pieces)
    out = fast["out"]
    steady_rtf = (out[-1] - out[0]) / ((len(out) - 1) / FPS) if len(out) > 1 else float("nan")
    return {
        "model": model,
        "preset": preset,
        "device": device,
        "seconds": seconds,
        "frames": report.frames,
        "cpu_load_1min": round(os.getloadavg()[0], 2),
        "overlap_v2": session.cfg.motion.overlap_v2,
        "steps": session.cfg.sampler.steps,
        "sampler": session.cfg.sampler.name,
        "register_s": register_s,
        "first_frame_ms": 1000 * (report.first_frame_s or float("nan")),
        "p50_ms": 1000 * (report.p50_s or float("nan")),
        "p95_ms": 1000 * (report.p95_s or float("nan")),
        "max_ms": 1000 * (report.max_s or float("nan")),
        "missed_deadlines": report.missed_deadlines,
        "steady_rtf": steady_rtf,
        "budget_first_frame_ms": {
            "audio_lookahead": 1000 * first_wait,
            "motion": 1000 * (rt["motion0"] - frame0_arrival - first_wait) if rt["motion0"] else float("nan"),
            "render": 1000 * (rt["out"][0] - rt["motion0"]) if rt["motion0"] and rt["out"] else float("nan"),
        },
        "mean_lookahead_ms": 1000 * mean_wait,
        "stage_ms_per_frame": rt["stages"],
    }


def memory_run(
    model: str, minutes: float, report_every_s: float, device: str, render: bool = True
) -> list[dict]:
    session = StreamingSession.from_overrides(
        [
            f"model={model}",
            "audio_encoder=untrained",
            "face=mediapipe",
            "sampler.steps=2",
            "progress=false",
            f"backend.device={device}",
        ],
        render=render,
    )
    source = session.engine.register(example_source())
    speech = synthetic_speech(10.0)
    frames = {"n": 0}
    session.start(source, on_frame=lambda item: frames.__setitem__("n", item.index + 1))
    rows, t0, total_s = [], time.perf_counter(), int(minutes * 60)
    for second in range(total_s):
        # Keep the producer at most AHEAD_S ahead of the frames (more than the 2.85 s look-ahead of
        # overlap 10).
        while frames["n"] < (second - AHEAD_S) * FPS and session.error is None:
            time.sleep(0.01)
        session.push(speech[(second % 10) * SAMPLE_RATE : (second % 10 + 1) * SAMPLE_RATE])
        if (second + 1) % int(report_every_s) == 0:
            row = {
                "audio_s": second + 1,
                "frames": frames["n"],
                "wall_s": round(time.perf_counter() - t0, 1),
                "rss_mb": round(rss_mb(), 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    session.close()
    session.release()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=None,
        choices=["untrained", "tiny"],
        help="default: untrained for latency runs, tiny for --minutes",
    )
    parser.add_argument("--preset", nargs="+", default=["quality", "realtime"])
    parser.add_argument("--seconds", type=float, default=4.0, help="audio length of the latency runs")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="backend.num_threads (0: torch default)")
    parser.add_argument(
        "--minutes", type=float, default=None, help="run the memory check for this long instead"
    )
    parser.add_argument("--report-every", type=float, default=30.0, help="seconds of audio between RSS lines")
    parser.add_argument(
        "--no-render",
        action="store_true",
        help="memory check of features + motion only (the stream state), ~30x faster with tiny",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--no-warmup", action="store_true", help="skip the 0.2 s warm-up stream")
    parser.add_argument("--frames", type=int, default=None, help="stop each stream after this many frames")
    parser.add_argument(
        "--no-fast-run",
        action="store_true",
        help="take the steady-state RTF from the real-time run (fine when it cannot keep up)",
    )
    args = parser.parse_args()

    if args.minutes is not None:
        results: object = memory_run(
            args.model or "tiny", args.minutes, args.report_every, args.device, render=not args.no_render
        )
    else:
        results = []
        for preset in args.preset:
            row = latency_run(
                args.model or "untrained",
                preset,
                args.seconds,
                args.device,
                args.threads,
                not args.no_warmup,
                not args.no_fast_run,
                args.frames,
            )
            print(json.dumps(row, indent=1), flush=True)
            results.append(row)  # type: ignore[attr-defined]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
