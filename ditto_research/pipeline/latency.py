"""Online-only pieces: audio chunk validation, per-frame latency books and the ring buffer they keep.

These know nothing of networks or stages; :mod:`ditto_research.pipeline.online` (the streaming session) and
the live server use them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.errors import InputError

__all__ = ["LatencyReport", "LatencyTracker", "RingBuffer", "as_mono_16k"]


class RingBuffer:
    """The last ``size`` floats of an endless series plus its running total, in memory allocated (and touched)
    up front, so that the books of a long stream never grow the resident set."""

    def __init__(self, size: int) -> None:
        self._values = np.full(size, np.nan)  # full(): every page is touched now, not as the stream goes
        self._count = 0
        self.total = 0.0

    def append(self, value: float) -> None:
        self._values[self._count % self._values.shape[0]] = value
        self._count += 1
        self.total += value

    def __len__(self) -> int:
        return min(self._count, self._values.shape[0])

    def values(self) -> np.ndarray:
        """The kept values (oldest first)."""
        size = self._values.shape[0]
        if self._count <= size:
            return self._values[: self._count].copy()
        start = self._count % size
        return np.concatenate([self._values[start:], self._values[:start]])

    def __iter__(self) -> Iterator[float]:
        return iter(self.values().tolist())


def as_mono_16k(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Validate one pushed chunk and return (n,) float32 (int16 is scaled by 1/32768; (n, 1) is accepted).

    Raises:
        InputError: wrong sample rate, dtype, shape, or non-finite values.
    """
    if sample_rate != SAMPLE_RATE:
        raise InputError(
            f"audio chunks must be {SAMPLE_RATE} Hz, got sample_rate={sample_rate}; resample first"
        )
    if not isinstance(samples, np.ndarray):
        raise InputError(f"an audio chunk must be a numpy array of samples, got {type(samples).__name__}")
    if samples.ndim == 2 and samples.shape[1] == 1:
        samples = samples[:, 0]
    if samples.ndim != 1:
        hint = "; mix the channels down to mono" if samples.ndim == 2 else ""
        raise InputError(
            f"an audio chunk must be mono samples of shape (n,) or (n, 1), got shape {samples.shape}{hint}"
        )
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype not in (np.float32, np.float64):
        raise InputError(f"audio chunks must be float32 in [-1, 1] or int16, got dtype {samples.dtype}")
    out = np.array(samples, dtype=np.float32)  # a copy: the caller may reuse its buffer
    if not np.isfinite(out).all():
        raise InputError("an audio chunk contains NaN or infinite samples")
    return out


@dataclass(frozen=True)
class LatencyReport:
    """Latency of one stream, in seconds (percentiles as ``np.percentile``, over the last frames kept).

    ``missed_deadlines``: frames handed over after ``t0 + index / 25``, t0 = when frame 0 was handed over,
    i.e. frames a player that starts showing at the first frame would have had to wait for.
    """

    frames: int
    first_frame_s: float | None
    p50_s: float | None
    p95_s: float | None
    max_s: float | None
    missed_deadlines: int

    def summary(self) -> str:
        if self.first_frame_s is None or self.p50_s is None:
            return "no frames"
        return (
            f"first frame {1000 * self.first_frame_s:.0f} ms, latency p50 {1000 * self.p50_s:.0f} / "
            f"p95 {1000 * (self.p95_s or 0):.0f} / max {1000 * (self.max_s or 0):.0f} ms, "
            f"{self.missed_deadlines} of {self.frames} frames missed their deadline"
        )


class LatencyTracker:
    """Per-frame latency = hand-over time - time the frame's audio (640 samples) had been pushed. Thread-safe.

    The first frame's latency is reported as ``first_frame_s``. Memory is bounded: push times are dropped once
    their frames are out, and percentiles use the last ``keep`` latencies.
    """

    def __init__(self, keep: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._arrivals: deque[tuple[int, float]] = deque()  # (samples pushed so far, time)
        self._total: int | None = None  # samples in the whole stream, once closed
        self._latencies = RingBuffer(keep)
        self._frames = 0
        self._first_emit: float | None = None
        self._first_latency: float | None = None
        self._missed = 0
        self._max = 0.0

    def audio_pushed(self, samples_so_far: int, now: float) -> None:
        with self._lock:
            self._arrivals.append((samples_so_far, now))

    def audio_closed(self, total_samples: int, now: float) -> None:
        with self._lock:
            self._total = total_samples
            self._arrivals.append((total_samples, now))

    def frame_out(self, index: int, now: float) -> float:
        """Record frame ``index`` handed over at ``now``; returns its latency (s)."""
        with self._lock:
            needed = (index + 1) * SAMPLE_RATE // FPS
            if self._total is not None:
                needed = min(needed, self._total)
            while len(self._arrivals) > 1 and self._arrivals[0][0] < needed:
                self._arrivals.popleft()
            arrived = self._arrivals[0][1] if self._arrivals else now
            latency = max(now - arrived, 0.0)
            if self._first_emit is None:
                self._first_emit, self._first_latency = now, latency
            elif now > self._first_emit + index / FPS:
                self._missed += 1
            self._frames += 1
            self._max = max(self._max, latency)
            self._latencies.append(latency)
            return latency

    @property
    def frames(self) -> int:
        """Frames recorded so far."""
        return self._frames

    def latencies(self) -> np.ndarray:
        """Per-frame latencies (s) in frame order, the last ``keep`` of them."""
        with self._lock:
            return self._latencies.values()

    def report(self) -> LatencyReport:
        with self._lock:
            if not self._latencies:
                return LatencyReport(self._frames, None, None, None, None, self._missed)
            p50, p95 = np.percentile(self._latencies.values(), [50, 95])
            return LatencyReport(
                self._frames, self._first_latency, float(p50), float(p95), self._max, self._missed
            )
