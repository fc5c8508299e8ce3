"""Watching a run without changing it: observers of generated motion and of stage timings.

A session (offline, online, server, evaluation) takes a list of observers and hands it to the engine's stages
and to the runner; an observer implements the hooks it cares about (the others are no-ops)::

    timer, motion = StageTimer(), MotionRecorder()
    session.generate("face.png", "speech.wav", "out.mp4", observers=[timer, motion])
    timer.ms_per_frame(result.frames), motion.array()

Hooks are called on the thread of the stage that produced the event, so implementations must be cheap and
thread-safe (the ones here take a lock).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from ditto_research.constants import MOTION_DIM
from ditto_research.pipeline.streaming import RingBuffer


class PipelineObserver:
    """Base class: every hook is a no-op."""

    def on_motion(self, index: int, motion: np.ndarray) -> None:
        """Generated (265,) motion row of output frame ``index`` (the motion stage's thread)."""

    def on_stage_call(self, stage: str, seconds: float) -> None:
        """One ``process`` call of ``stage`` took ``seconds`` of wall time (that stage's thread)."""


class StageTimer(PipelineObserver):
    """Per-stage wall time of every ``process`` call: totals, and the last ``keep`` calls for percentiles.

    Memory is allocated up front (ring buffers), so a stream of any length keeps a constant footprint.
    """

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._calls: dict[str, RingBuffer] = {}

    def on_stage_call(self, stage: str, seconds: float) -> None:
        with self._lock:
            calls = self._calls.get(stage)
            if calls is None:
                calls = self._calls[stage] = RingBuffer(self.keep)
            calls.append(seconds)

    def busy_s(self) -> dict[str, float]:
        """Total busy time of each stage (s), in the order the stages first reported."""
        with self._lock:
            return {name: calls.total for name, calls in self._calls.items()}

    def ms_per_frame(self, frames: int) -> dict[str, float]:
        """Busy time of each stage divided by ``frames`` (ms)."""
        return {name: 1000.0 * total / max(frames, 1) for name, total in self.busy_s().items()}

    def call_seconds(self) -> dict[str, np.ndarray]:
        """Each stage's busy time per call (s), the last ``keep`` calls, oldest first."""
        with self._lock:
            return {name: calls.values() for name, calls in self._calls.items()}


class MotionRecorder(PipelineObserver):
    """Keeps the generated motion rows of frames ``0 .. num_frames - 1`` (None: every frame, growing)."""

    def __init__(self, num_frames: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, np.ndarray] = {}
        self.num_frames = num_frames

    def on_motion(self, index: int, motion: np.ndarray) -> None:
        if self.num_frames is not None and not 0 <= index < self.num_frames:
            return
        with self._lock:
            self._rows[index] = np.array(motion, dtype=np.float32)

    def array(self) -> np.ndarray:
        """(n, 265) rows of frames 0 .. n-1, n = the first frame not seen (normally all of them)."""
        with self._lock:
            n = 0
            while n in self._rows:
                n += 1
            if n == 0:
                return np.zeros((0, MOTION_DIM), np.float32)
            return np.stack([self._rows[i] for i in range(n)])


def notify_motion(observers: Iterable[PipelineObserver], index: int, motion: np.ndarray) -> None:
    for observer in observers:
        observer.on_motion(index, motion)
