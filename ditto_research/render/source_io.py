"""Deprecated home of :mod:`ditto_research.media.source` (media I/O has one package now: media/).
Importing it warns and re-exports."""

from __future__ import annotations

import warnings

from ditto_research.media.source import SourceMedia, check_resize, load_source, mirror_index

__all__ = ["SourceMedia", "check_resize", "load_source", "mirror_index"]

warnings.warn(
    "ditto_research.render.source_io moved to ditto_research.media.source",
    DeprecationWarning,
    stacklevel=2,
)
