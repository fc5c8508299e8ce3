"""Deprecated name of :mod:`ditto_research.pipeline.latency` (the module holds latency bookkeeping, not a
streaming session: that is :mod:`ditto_research.pipeline.online`). Importing it warns and re-exports."""

from __future__ import annotations

import warnings

from ditto_research.pipeline.latency import LatencyReport, LatencyTracker, RingBuffer, as_mono_16k

__all__ = ["LatencyReport", "LatencyTracker", "RingBuffer", "as_mono_16k"]

warnings.warn(
    "ditto_research.pipeline.streaming was renamed ditto_research.pipeline.latency",
    DeprecationWarning,
    stacklevel=2,
)
