"""Deprecated home of :mod:`ditto_research.media.writer` (media I/O has one package now: media/).
Importing it warns and re-exports."""

from __future__ import annotations

import warnings

from ditto_research.media.writer import VideoWriter, probe_video

__all__ = ["VideoWriter", "probe_video"]

warnings.warn(
    "ditto_research.render.writer moved to ditto_research.media.writer",
    DeprecationWarning,
    stacklevel=2,
)
