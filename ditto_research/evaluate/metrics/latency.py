"""Latency and resource helpers: per-frame latency percentiles, real-time factor, peak memory.

Measurement stays with the caller (wrap the stage in :class:`FrameTimer`, or collect ``perf_counter``
differences); these helpers only summarise. Inputs are seconds, summaries are milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ditto_research.errors import InputError
from ditto_research.memory import peak_rss_mb

__all__ = [
    "FrameTimer",
    "LatencySummary",
    "frames_per_second",
    "peak_cuda_memory_bytes",
    "peak_rss_bytes",
    "real_time_factor",
    "reset_peak_cuda_memory",
    "summarize_latencies",
]


@dataclass(frozen=True)
class LatencySummary:
    """Per-frame latency summary in milliseconds (percentiles interpolate linearly, as ``np.percentile``)."""

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize_latencies(seconds: Sequence[float] | np.ndarray) -> LatencySummary:
    """p50 / p95 / max / mean of per-frame latencies given in seconds."""
    values = np.asarray(seconds, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise InputError("no latencies to summarise: the run produced no frames")
    if not np.isfinite(values).all() or (values < 0).any():
        raise InputError("latencies must be finite and non-negative seconds")
    ms = values * 1000.0
    p50, p95 = np.percentile(ms, [50, 95])
    return LatencySummary(
        count=int(ms.size),
        mean_ms=float(ms.mean()),
        p50_ms=float(p50),
        p95_ms=float(p95),
        max_ms=float(ms.max()),
    )


def real_time_factor(processing_seconds: float, media_seconds: float) -> float:
    """Processing time over media duration: below 1 is faster than real time."""
    if media_seconds <= 0:
        raise InputError(f"media duration must be positive, got {media_seconds} s")
    return float(processing_seconds) / float(media_seconds)


def frames_per_second(num_frames: int, seconds: float) -> float:
    """Throughput of ``num_frames`` produced in ``seconds`` of wall time."""
    if seconds <= 0:
        raise InputError(f"elapsed time must be positive, got {seconds} s")
    return num_frames / float(seconds)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (see :func:`ditto_research.memory.peak_rss_mb`)."""
    return int(peak_rss_mb() * 1024 * 1024)


def peak_cuda_memory_bytes(device: torch.device | str | int | None = None) -> int | None:
    """Peak memory allocated by torch on a CUDA device since the last reset (None without CUDA)."""
    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.max_memory_allocated(device))


def reset_peak_cuda_memory(device: torch.device | str | int | None = None) -> None:
    """Start a new peak for :func:`peak_cuda_memory_bytes` (no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)


@dataclass
class FrameTimer:
    """Collects per-frame wall times: ``with timer.frame(): ...`` or ``timer.add(seconds)``.

    For asynchronous devices, synchronise inside the block (e.g. ``torch.cuda.synchronize()``) so that the
    time covers the work and not only its launch.
    """

    seconds: list[float] = field(default_factory=list)

    @contextmanager
    def frame(self) -> Iterator[None]:
        """Times the block; a block that raises is not recorded."""
        start = time.perf_counter()
        yield
        self.seconds.append(time.perf_counter() - start)

    def add(self, seconds: float) -> None:
        self.seconds.append(float(seconds))

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))

    def summary(self) -> LatencySummary:
        return summarize_latencies(self.seconds)
