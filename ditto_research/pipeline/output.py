"""Deprecated home of :func:`ditto_research.media.writer.write_frames` (media I/O has one package now:
media/). Importing it warns and re-exports."""

from __future__ import annotations

import warnings

from ditto_research.media.writer import write_frames

__all__ = ["write_frames"]

warnings.warn(
    "ditto_research.pipeline.output moved to ditto_research.media.writer (write_frames)",
    DeprecationWarning,
    stacklevel=2,
)
