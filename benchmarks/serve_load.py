"""The live server under load, measured with its WebSocket client: latency, lag, fps, drops, RSS.

    python benchmarks/serve_load.py                  # model=tiny, 1 and 4 sessions, paced and flat-out
    python benchmarks/serve_load.py --model untrained --sessions 4 --seconds 4 --json serve_load.json
    python benchmarks/serve_load.py --sessions 1 --seconds 1 --churn 2 --modes flat   # a quick smoke

It starts ``python -m ditto_research.serve model=MODEL +preset=realtime face=mediapipe audio_encoder=untrained
serve.port=0`` itself (127.0.0.1, a free port), then:

1. warms up (``--warmup`` short sessions), reads the server's RSS (``VmRSS`` of /proc/PID/status), opens
   and closes ``--churn`` short sessions one after another (``--churn-seconds`` of speech each) and reads it
   again: the difference must stay within ``--rss-limit-mb`` (20 MB);
2. for each mode (``paced``: audio at 1x wall-clock pace in 20 ms pieces, as a microphone; ``flat``: as fast
   as the socket takes it) and for 1 and ``--sessions`` concurrent sessions (one asyncio.gather of client
   streams of ``--seconds`` of speech), reports first-frame latency, per-frame lag p50 / p95 (pooled over the
   sessions' frames), fps per session and dropped frames, client-measured beside the server's own numbers.

Every loop is bounded in count and in time (``--limit-s``); the server is stopped at the end, even on error.
Run it alone on an idle machine: the numbers are wall-clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ditto_research.audio.io import load_audio
from ditto_research.constants import SAMPLE_RATE
from ditto_research.errors import DittoError
from ditto_research.examples import synthetic_speech
from ditto_research.serve.client import ClientResult, stream

SENTENCE = (
    "The quick brown fox jumps over the lazy dog, and a live server keeps the avatar talking while the "
    "audio streams in, one small piece at a time."
)
START_TIMEOUT_S = 180.0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str  # ws://127.0.0.1:PORT/ws

    @property
    def http(self) -> str:
        return self.url.replace("ws://", "http://", 1).removesuffix("/ws")

    def rss_mb(self) -> float:
        """Resident set of the server process (MB), from /proc/PID/status."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise DittoError(f"no VmRSS line for the server process {self.process.pid}")

    def portrait(self) -> str:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.http + "/api/portraits", timeout=30) as response:
            return str(json.load(response)[0]["id"])

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def start_server(model: str, max_sessions: int, log: Path, extra: list[str], env: dict[str, str]) -> Server:
    """The server subprocess, once it prints its URL (bounded wait; its log tail on failure)."""
    command = [
        sys.executable,
        "-m",
        "ditto_research.serve",
        f"model={model}",
        "+preset=realtime",
        "face=mediapipe",
        "audio_encoder=untrained",
        "serve.host=127.0.0.1",
        "serve.port=0",
        f"serve.max_sessions={max_sessions}",
        *extra,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    server = Server(process, "")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("serving on "):
                server.url = line.split("WebSocket ")[1].rstrip(")")
                return server
        time.sleep(0.2)
    server.stop()
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise DittoError(f"the server did not start within {START_TIMEOUT_S:.0f} s:\n{tail}")


def speech(seconds: float, folder: Path, source: str) -> np.ndarray:
    """``seconds`` of espeak-ng speech (repeated to length), or synthetic speech without espeak-ng."""
    length = int(seconds * SAMPLE_RATE)
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if source == "synthetic" or espeak is None:
        return synthetic_speech(seconds)
    wav = folder / "sentence.wav"
    subprocess.run([espeak, "-w", str(wav), SENTENCE], check=True, capture_output=True, timeout=60)
    spoken = load_audio(wav)
    return np.resize(spoken, length).astype(np.float32)


async def run_concurrent(
    server: Server, portrait: str, audio: np.ndarray, count: int, realtime: bool, limit_s: float
) -> list[ClientResult]:
    streams = [stream(server.url, audio, portrait, realtime=realtime, timeout_s=120.0) for _ in range(count)]
    return list(await asyncio.wait_for(asyncio.gather(*streams), limit_s))


def summarize(mode: str, results: list[ClientResult]) -> dict[str, object]:
    """Pooled per-frame lags, means over sessions of the rest."""
    lags = [lag for r in results for lag in r.lags_ms]

    def mean(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return round(float(np.mean(known)), 1) if known else None

    def pct(q: float) -> float | None:
        return round(float(np.percentile(lags, q)), 1) if lags else None

    return {
        "mode": mode,
        "sessions": len(results),
        "frames": sum(r.frames for r in results),
        "first_frame_ms": mean([r.first_frame_ms for r in results]),
        "first_frame_max_ms": max((r.first_frame_ms or 0.0) for r in results),
        "server_first_frame_ms": mean([r.server_first_frame_ms for r in results]),
        "lag_p50_ms": pct(50),
        "lag_p95_ms": pct(95),
        "server_lag_p50_ms": mean([r.server_lag_p50_ms for r in results]),
        "server_lag_p95_ms": max((r.server_lag_p95_ms or 0.0) for r in results),
        "fps": mean([r.fps for r in results]),
        "server_fps": mean([r.server_fps for r in results]),
        "dropped": sum(r.dropped for r in results),
        "server_dropped": sum(r.server_dropped or 0 for r in results),
    }


def churn(server: Server, portrait: str, audio: np.ndarray, count: int, limit_s: float) -> dict[str, object]:
    """RSS before and after ``count`` sessions opened and closed one after another (bounded in time)."""
    first = server.rss_mb()
    series = [round(first, 1)]
    deadline = time.monotonic() + limit_s
    done = 0
    for k in range(count):
        if time.monotonic() > deadline:
            break
        asyncio.run(stream(server.url, audio, portrait, timeout_s=120.0))
        done = k + 1
        series.append(round(server.rss_mb(), 1))
    last = server.rss_mb()
    return {
        "sessions": done,
        "rss_first_mb": round(first, 1),
        "rss_last_mb": round(last, 1),
        "rss_growth_mb": round(last - first, 1),
        "rss_series_mb": series,
    }


def cell(value: object, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.0f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| mode | sessions | first frame ms (server) | lag p50 / p95 ms (server) | fps / session (server) "
        "| dropped (server) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        first = f"{cell(r['first_frame_ms'])} ({cell(r['server_first_frame_ms'])})"
        lines.append(
            f"| {r['mode']} | {r['sessions']} | {first} "
            f"| {cell(r['lag_p50_ms'])} / {cell(r['lag_p95_ms'])} ({cell(r['server_lag_p50_ms'])} / "
            f"{cell(r['server_lag_p95_ms'])}) | {r['fps']} ({r['server_fps']}) | {r['dropped']} "
            f"({r['server_dropped']}) |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="tiny", choices=["tiny", "untrained"], help="networks of the server"
    )
    parser.add_argument("--sessions", type=int, default=4, help="concurrent sessions (besides 1)")
    parser.add_argument("--seconds", type=float, default=4.0, help="speech per latency session (s)")
    parser.add_argument("--modes", default="paced,flat", help="comma-separated: paced (1x), flat (flat-out)")
    parser.add_argument("--speech", default="espeak", choices=["espeak", "synthetic"], help="the audio")
    parser.add_argument("--warmup", type=int, default=2, help="short sessions before any measurement")
    parser.add_argument("--churn", type=int, default=50, help="sessions opened and closed for the RSS check")
    parser.add_argument("--churn-seconds", type=float, default=0.5, help="speech per churn session (s)")
    parser.add_argument("--rss-limit-mb", type=float, default=20.0, help="allowed RSS growth over the churn")
    parser.add_argument("--limit-s", type=float, default=3600.0, help="time limit of the whole run (s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="OVERRIDE",
        help="an extra server override, e.g. serve.frame_queue=4 (repeatable)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the server, e.g. MALLOC_ARENA_MAX=2 (repeatable)",
    )
    args = parser.parse_args(argv)
    if not all("=" in item for item in args.server_env):
        parser.error("--server-env takes NAME=VALUE")
    modes = args.modes.split(",")
    if not set(modes) <= {"paced", "flat"} or args.sessions < 1 or args.churn < 0 or args.seconds <= 0:
        parser.error("--modes takes paced,flat; --sessions >= 1, --churn >= 0, --seconds > 0")
    args.modes = modes
    return args


def run(args: argparse.Namespace, folder: Path) -> dict[str, object]:
    deadline = time.monotonic() + args.limit_s
    env = dict(item.split("=", 1) for item in args.server_env)
    server = start_server(args.model, max(4, args.sessions), folder / "server.log", args.server_arg, env)
    try:
        portrait = server.portrait()
        short = speech(args.churn_seconds, folder, args.speech)
        for _ in range(args.warmup):
            asyncio.run(stream(server.url, short, portrait, timeout_s=120.0))
        memory = churn(server, portrait, short, args.churn, max(1.0, deadline - time.monotonic()))
        memory["ok"] = memory["rss_growth_mb"] <= args.rss_limit_mb
        audio = speech(args.seconds, folder, args.speech)
        rows = []
        for mode in args.modes:
            for count in sorted({1, args.sessions}):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DittoError(f"--limit-s={args.limit_s:g} ran out before {mode} x {count}")
                results = asyncio.run(run_concurrent(server, portrait, audio, count, mode == "paced", left))
                rows.append(summarize(mode, results))
                print(f"  {mode} x {count}: done", file=sys.stderr, flush=True)
    finally:
        server.stop()
    config = {
        "model": args.model,
        "seconds": args.seconds,
        "speech": args.speech,
        "churn": args.churn,
        "churn_seconds": args.churn_seconds,
        "server_args": args.server_arg,
        "server_env": args.server_env,
        "cpus": os.cpu_count(),
    }
    return {"config": config, "scenarios": rows, "memory": memory}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: the server is stopped
    try:
        with tempfile.TemporaryDirectory(prefix="ditto-serve-load-") as folder:
            report = run(args, Path(folder))
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(report["scenarios"]))
    m = report["memory"]
    verdict = "ok" if m["ok"] else "OVER THE LIMIT"
    print(
        f"\nserver RSS: {m['rss_first_mb']} MB after warm-up, {m['rss_last_mb']} MB after {m['sessions']} "
        f"sessions ({m['rss_growth_mb']:+.1f} MB; limit {args.rss_limit_mb:g} MB: {verdict})"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0 if m["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
