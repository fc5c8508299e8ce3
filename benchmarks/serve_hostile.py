"""The live server under hostile clients: its peak RSS under a fuzz run and under concurrent sessions with
hostile options, and whether it is still up afterwards.

    python benchmarks/serve_hostile.py                         # both scenarios, model=tiny
    python benchmarks/serve_hostile.py --scenario sessions --sessions 8
    python benchmarks/serve_hostile.py --server-pythonpath /tmp/base   # a server from another checkout

It starts ``python -m ditto_research.serve model=tiny +preset=realtime face=mediapipe audio_encoder=untrained
serve.port=0 serve.max_sessions=N`` itself (127.0.0.1, a free port) and samples the server's VmRSS every 50 ms
from /proc; past ``--rss-cap-mb`` (default 8000) the watchdog kills the server (reported as such), so a
server that would take the machine down is stopped first. Scenarios:

- ``sessions``: N clients at once, each starting a session with one hostile option (huge chunk sizes, steps,
  overlaps, lists, interpolations, file options), sending 0.5 s of audio and ``end``; each waits at most
  ``--limit-s`` for its answer;
- ``fuzz``: ``--batches`` batches of the fuzz generator of tests/serve/test_fuzz.py (random WebSocket
  conversations and HTTP requests, fixed seed).

Every loop is bounded in count and time; the server is stopped at the end. Prints one JSON line per scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from tests.serve.fuzz import FuzzStats, http_request, ws_conversation  # noqa: E402

SERVER = ["model=tiny", "+preset=realtime", "face=mediapipe", "audio_encoder=untrained", "serve.port=0"]
HOSTILE_SESSION_OPTIONS = [
    ["mode.chunksize=[3000000,5,2]"],
    ["mode.chunksize=[3,500000,2]"],
    ["mode.chunksize=[200000,5,200000]"],
    ["sampler.steps=1000"],
    ["motion.overlap_v2=79", "sampler.steps=1000"],
    ["control.emo=${oc.env:HOME}"],
    ["control.ctrl_info_file=/etc/passwd"],
    ["control.delta_eye_open_n=[" + ",".join(["1"] * 20000) + "]"],
]


class Server:
    """The server process and a watchdog thread recording its peak RSS (and killing it past the cap)."""

    def __init__(self, sessions: int, pythonpath: str | None, cap_mb: float) -> None:
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        command = [sys.executable, "-m", "ditto_research.serve", *SERVER, f"serve.max_sessions={sessions}"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd="/tmp"
        )
        self.cap_mb = cap_mb
        self.peak_mb = 0.0
        self.killed = False
        deadline = time.monotonic() + 180
        line = b""
        while b"serving on" not in line:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the server did not start")
            line = self.process.stdout.readline()
        self.http = line.decode().split()[2].rstrip("/")
        self.ws = self.http.replace("http://", "ws://") + "/ws"
        self.idle_mb = self.rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except FileNotFoundError:
            pass
        return 0.0

    def _watch(self) -> None:
        while not self._stop.is_set() and self.process.poll() is None:
            rss = self.rss_mb()
            self.peak_mb = max(self.peak_mb, rss)
            if rss > self.cap_mb:
                self.killed = True
                self.process.kill()
                return
            time.sleep(0.05)

    def alive(self) -> bool:
        try:
            with urllib.request.urlopen(self.http + "/api/health", timeout=10) as r:
                return bool(json.load(r)["ok"])
        except OSError:
            return False

    def portrait(self) -> str:
        with urllib.request.urlopen(self.http + "/api/portraits", timeout=30) as r:
            return str(json.load(r)[0]["id"])

    def stop(self) -> None:
        self._stop.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def hostile_session(server: Server, portrait: str, options: list[str], limit_s: float) -> str:
    """What the server answered to one session with ``options`` (an error code, "done", or how it ended)."""
    pcm = bytes(16000)  # 0.5 s of silence, PCM16
    try:
        with connect(server.ws, open_timeout=30, close_timeout=5) as ws:
            ws.send(json.dumps({"type": "start", "portrait": portrait, "options": options, "idle": False}))
            ws.send(pcm)
            ws.send(json.dumps({"type": "end"}))
            deadline = time.monotonic() + limit_s
            while time.monotonic() < deadline:
                message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
                if isinstance(message, str):
                    reply = json.loads(message)
                    if reply["type"] in ("error", "done"):
                        return reply.get("code", "done")
            return "no answer"
    except ConnectionClosed as e:
        return f"closed {e.rcvd.code if e.rcvd else 'abnormally'}"
    except TimeoutError:
        return "no answer"
    except OSError as e:
        return f"connection failed ({e.__class__.__name__})"


def run_sessions(args: argparse.Namespace) -> dict:
    server = Server(args.sessions, args.server_pythonpath, args.rss_cap_mb)
    try:
        portrait = server.portrait()
        options = [HOSTILE_SESSION_OPTIONS[i % len(HOSTILE_SESSION_OPTIONS)] for i in range(args.sessions)]
        answers: list[str] = [""] * args.sessions

        def client(i: int) -> None:
            answers[i] = hostile_session(server, portrait, options[i], args.limit_s)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.sessions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(args.limit_s + 30)
        time.sleep(1.0)
        return {
            "scenario": f"{args.sessions} sessions with hostile options",
            "idle_rss_mb": round(server.idle_mb, 1),
            "peak_rss_mb": round(server.peak_mb, 1),
            "killed_at_cap": server.killed,
            "alive_after": server.alive(),
            "rss_after_mb": round(server.rss_mb(), 1),
            "answers": dict(zip([o[0][:40] for o in options], answers)),
        }
    finally:
        server.stop()


def run_fuzz(args: argparse.Namespace) -> dict:
    server = Server(4, args.server_pythonpath, args.rss_cap_mb)
    stats = FuzzStats()
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    try:
        portrait = server.portrait()
        for _ in range(args.batches):
            if server.process.poll() is not None or time.monotonic() - t0 > args.limit_s * 4:
                break
            for _ in range(12):
                ws_conversation(server.ws, rng, portrait, stats)
                http_request(server.http, rng, stats)
        return {
            "scenario": f"fuzz, {args.batches} batches of 12 WebSocket conversations + 12 HTTP requests",
            "idle_rss_mb": round(server.idle_mb, 1),
            "peak_rss_mb": round(server.peak_mb, 1),
            "killed_at_cap": server.killed,
            "alive_after": server.alive(),
            "server_errors": len(stats.server_errors),
            "close_codes": {str(k): v for k, v in stats.close_codes.items()},
            "statuses": {str(k): v for k, v in stats.statuses.items()},
            "seconds": round(time.monotonic() - t0, 1),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["sessions", "fuzz", "both"], default="both")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--limit-s", type=float, default=120.0, help="wait for each hostile session's answer")
    parser.add_argument(
        "--rss-cap-mb", type=float, default=8000.0, help="the watchdog kills the server past it"
    )
    parser.add_argument("--server-pythonpath", help="run the server from another checkout (before/after)")
    args = parser.parse_args()
    if args.scenario in ("sessions", "both"):
        print(json.dumps(run_sessions(args)), flush=True)
    if args.scenario in ("fuzz", "both"):
        print(json.dumps(run_fuzz(args)), flush=True)


if __name__ == "__main__":
    main()
