"""A bounded fuzz run against a real server (127.0.0.1, free port, model=tiny): random and mutated WebSocket
conversations and HTTP requests (types, sizes, nesting, options, binary junk, Origins), in batches. After each
batch the server must answer health, its RSS must stay within a bound, and a bystander session streaming a
file beside the fuzz must keep getting frames. Fixed count, seed and time limit: it stops by itself."""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.serve.conftest import TINY, start_server
from tests.serve.fuzz import FuzzStats, http_request, ws_conversation
from tests.serve.test_ws import pcm16, portrait_id, wait_no_session_threads

SEED = int(os.environ.get("DITTO_FUZZ_SEED", "19"))
BATCHES = int(os.environ.get("DITTO_FUZZ_BATCHES", "6"))
PER_BATCH = 12  # WebSocket conversations and HTTP requests each, per batch
LIMIT_S = 240.0  # the whole run
RSS_BOUND_MB = 300.0  # growth of this process (server + clients) over the run


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Bystander:
    """A well-behaved client streaming a long file (idle=false) through the whole fuzz run."""

    def __init__(self, url: str, portrait: str) -> None:
        self.url, self.portrait = url, portrait
        self.frames = 0
        self.texts: list[dict] = []
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.ready.wait(120), "the bystander's session did not start"

    def _run(self) -> None:
        deadline = time.monotonic() + LIMIT_S + 60
        with connect(self.url, open_timeout=60, close_timeout=10) as ws:
            ws.send(json.dumps({"type": "start", "portrait": self.portrait, "idle": False}))
            self.texts.append(json.loads(ws.recv(timeout=120)))
            self.ready.set()
            sender = threading.Thread(target=self._send, args=(ws,), daemon=True)
            sender.start()
            try:
                while time.monotonic() < deadline:
                    if self._stop.is_set():  # a back-pressured client is stopped by closing (see serve.md)
                        ws.close()
                        break
                    try:
                        message = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    if isinstance(message, bytes):
                        self.frames += 1
                    else:
                        self.texts.append(json.loads(message))
            except ConnectionClosed:
                pass
            sender.join(10)

    def _send(self, ws) -> None:  # noqa: ANN001 - a websockets connection
        audio = pcm16(60.0)  # far more than the run renders; the server reads it under back-pressure
        try:
            for first in range(0, len(audio), 32_000):  # 1 s a message, under serve.max_message_kb
                if self._stop.is_set() or not self._thread.is_alive():
                    return
                ws.send(audio[first : first + 32_000])
        except ConnectionClosed:
            pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.fixture(scope="module")
def fuzz_server():
    running = start_server(
        [
            *TINY,
            "serve.max_sessions=4",
            "serve.idle_timeout_s=5",
            "serve.max_message_kb=64",
            "serve.max_upload_mb=1",
        ]
    )
    yield running
    running.stop()


def test_fuzzed_clients_do_not_take_the_server_or_other_sessions_down(fuzz_server):
    rng = random.Random(SEED)
    portrait = portrait_id(fuzz_server)
    stats = FuzzStats()
    start = time.monotonic()
    bystander = Bystander(fuzz_server.ws, portrait)
    try:
        deadline = time.monotonic() + 120
        while bystander.frames == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bystander.frames > 0, "the bystander never got a frame"
        base_rss = rss_mb()
        peak = base_rss
        for batch in range(BATCHES):
            seen = bystander.frames
            for _ in range(PER_BATCH):
                ws_conversation(fuzz_server.ws, rng, portrait, stats)
                http_request(fuzz_server.url, rng, stats)
            with urllib.request.urlopen(fuzz_server.url + "/api/health", timeout=10) as r:
                assert json.load(r)["ok"], f"batch {batch}: health"
            peak = max(peak, rss_mb())
            assert peak - base_rss < RSS_BOUND_MB, f"batch {batch}: RSS grew {peak - base_rss:.0f} MB"
            wait = time.monotonic() + 30
            while bystander.frames == seen and time.monotonic() < wait:
                time.sleep(0.1)
            assert bystander.frames > seen, f"batch {batch}: the bystander stopped getting frames"
            assert not [t for t in bystander.texts if t["type"] == "error"], bystander.texts
            assert time.monotonic() - start < LIMIT_S, f"the fuzz run took over {LIMIT_S} s"
    finally:
        bystander.stop()
    assert stats.server_errors == [], stats.server_errors
    assert stats.ws == stats.http == BATCHES * PER_BATCH
    assert 1006 not in stats.close_codes, stats.close_codes  # every refusal is a message and a close code
    print(f"fuzz: {stats}, RSS +{peak - base_rss:.0f} MB, bystander {bystander.frames} frames")
    assert wait_no_session_threads(30.0) == []
