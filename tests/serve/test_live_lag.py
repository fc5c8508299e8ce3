"""A live session stays live when rendering is slower than real time (serve.max_lag_s), on a stand-in stream
whose speed and look-ahead are set exactly, so the pacer's rule is tested without depending on this machine's
speed (the real pipeline runs in tests/serve/test_hostile.py). Every loop is bounded in time."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from ditto_research.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ditto_research.pipeline.stages import FrameImage
from ditto_research.serve import live
from ditto_research.serve.config import ServeSettings
from ditto_research.serve.live import EndOfFrames, FrameOutbox, LiveSession

LOOKAHEAD = 12  # frames of audio the stand-in needs beyond a frame before it can render it


class SlowStream:
    """Renders frame i once audio up to frame i + LOOKAHEAD has been pushed (or the stream closed), at most
    ``fps`` frames per second: a pipeline slower than real time."""

    fps = 15.0

    def __init__(self, engine: object, queue_size: int = 4) -> None:
        self.pushed = 0
        self.closed = False
        self.error = None
        self._stop = threading.Event()
        self._stream = SimpleNamespace(thread=None)

    def start(self, source: object, on_frame) -> None:  # noqa: ANN001
        self.on_frame = on_frame
        self._stream.thread = threading.Thread(target=self._render, daemon=True)
        self._stream.thread.start()

    def push(self, samples: np.ndarray) -> None:
        self.pushed += samples.shape[0]

    def close(self) -> None:
        self.closed = True
        self._stream.thread.join(30)

    def cancel(self) -> None:
        self._stop.set()
        self._stream.thread.join(30)

    def _render(self) -> None:
        index, deadline = 0, time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            total = self.pushed // SAMPLES_PER_FRAME
            ready = total if self.closed else total - LOOKAHEAD
            if index < ready:
                time.sleep(1.0 / self.fps)
                self.on_frame(FrameImage(index, np.zeros((2, 2, 3), np.uint8)))
                index += 1
            elif self.closed:
                return
            else:
                time.sleep(0.005)


def engine(overlap: int = 75, chunksize: tuple[int, int, int] = (3, 5, 2)) -> SimpleNamespace:
    cfg = SimpleNamespace(
        motion=SimpleNamespace(seq_frames=80, overlap_v2=overlap), mode=SimpleNamespace(chunksize=chunksize)
    )
    return SimpleNamespace(cfg=cfg)


def run_live(monkeypatch, seconds: float, idle: bool, max_lag_s: float) -> dict:
    """Feed ``seconds`` of audio at 1x pace in 20 ms pieces, then end; the session's final stats."""
    monkeypatch.setattr(live, "StreamingSession", SlowStream)
    loop = asyncio.new_event_loop()
    try:
        settings = ServeSettings(max_lag_s=max_lag_s, idle_timeout_s=0, idle_fill_delay_s=0.2)
        session = LiveSession(engine(), SimpleNamespace(), settings, FrameOutbox(loop, 10_000), idle=idle)
        lags = []
        session.start()
        piece = np.zeros(SAMPLE_RATE // 50, np.float32)
        t0 = time.monotonic()
        for k in range(int(seconds * 50)):
            time.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
            session.push(piece)
            if k % 25 == 0 and session.stats()["lag_ms"] is not None:
                lags.append(session.stats()["lag_ms"])
        session.end()
        session.join(60)
        assert session.ended
        return {**session.stats(), "lags": lags, "reason": session._reason}
    finally:
        loop.close()


def test_a_live_session_skips_old_audio_and_its_lag_stays_bounded(monkeypatch):
    """15 fps against 25 fps of audio: without the skip the lag grows by 0.4 s every second."""
    stats = run_live(monkeypatch, seconds=8.0, idle=True, max_lag_s=2.0)
    assert stats["reason"] == EndOfFrames("end")
    assert stats["skipped_s"] > 2.0, stats
    pipeline_s = (LOOKAHEAD + 1) / SlowStream.fps  # the stand-in's own floor
    late = stats["lags"][len(stats["lags"]) // 2 :]
    assert pipeline_s < 2.0  # the limit is reachable: the lag is held within it (a tick and a frame of slack)
    assert late and max(late) <= 2000 + 100, stats
    # frames + skipped audio account for every second sent
    assert stats["frames"] / FPS + stats["skipped_s"] == pytest.approx(
        stats["audio_s"] + stats["skipped_s"], abs=0.05
    )


def test_a_file_client_is_never_skipped(monkeypatch):
    stats = run_live(monkeypatch, seconds=4.0, idle=False, max_lag_s=2.0)
    assert stats["skipped_s"] == 0 and stats["frames"] == 4 * FPS
    assert stats["lag_ms"] > 2000  # it falls behind instead: every frame is rendered


def test_without_a_limit_the_lag_grows(monkeypatch):
    stats = run_live(monkeypatch, seconds=6.0, idle=True, max_lag_s=0.0)
    assert stats["skipped_s"] == 0 and stats["lag_ms"] > 3000, stats  # 0.4 s more every second
