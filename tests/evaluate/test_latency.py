"""Latency summaries, real-time factor and peak-memory helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ditto_research.errors import InputError
from ditto_research.evaluate.metrics.latency import (
    FrameTimer,
    frames_per_second,
    peak_cuda_memory_bytes,
    peak_rss_bytes,
    real_time_factor,
    reset_peak_cuda_memory,
    summarize_latencies,
)


def test_summary_percentiles() -> None:
    seconds = np.arange(1, 101) / 1000.0  # 1 .. 100 ms, shuffled
    np.random.default_rng(0).shuffle(seconds)
    summary = summarize_latencies(seconds)
    assert summary.count == 100
    assert summary.p50_ms == pytest.approx(50.5) and summary.p95_ms == pytest.approx(95.05)
    assert summary.max_ms == pytest.approx(100.0) and summary.mean_ms == pytest.approx(50.5)
    assert summarize_latencies([0.02]).as_dict() == pytest.approx(
        {"count": 1, "mean_ms": 20.0, "p50_ms": 20.0, "p95_ms": 20.0, "max_ms": 20.0}
    )


@pytest.mark.parametrize("bad", [[], [0.01, -0.001], [float("nan")]])
def test_summary_rejects_bad_latencies(bad: list[float]) -> None:
    with pytest.raises(InputError):
        summarize_latencies(bad)


def test_real_time_factor_and_fps() -> None:
    assert real_time_factor(2.0, 4.0) == pytest.approx(0.5)  # twice as fast as real time
    assert frames_per_second(100, 4.0) == pytest.approx(25.0)
    with pytest.raises(InputError, match="positive"):
        real_time_factor(1.0, 0.0)
    with pytest.raises(InputError, match="positive"):
        frames_per_second(10, 0.0)


def test_peak_rss_grows_with_allocation() -> None:
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
    peak = peak_rss_bytes()
    assert peak is not None and peak >= block.nbytes
    del block


def test_peak_cuda_memory() -> None:
    reset_peak_cuda_memory()
    peak = peak_cuda_memory_bytes()
    if torch.cuda.is_available():
        buffer = torch.empty(1 << 20, dtype=torch.uint8, device="cuda")
        assert peak_cuda_memory_bytes() >= buffer.numel()
    else:
        assert peak is None


def test_frame_timer() -> None:
    timer = FrameTimer()
    for _ in range(3):
        with timer.frame():
            sum(range(1000))
    timer.add(0.5)
    with pytest.raises(RuntimeError), timer.frame():  # a failed frame is not recorded
        raise RuntimeError("stage failed")
    assert len(timer.seconds) == 4 and all(s >= 0 for s in timer.seconds)
    assert timer.total_seconds >= 0.5 and timer.summary().max_ms == pytest.approx(500.0)
