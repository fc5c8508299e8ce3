"""Deprecated home of :mod:`ditto_research.media.output_files` (media I/O has one package now: media/).
Importing it warns and re-exports."""

from __future__ import annotations

import warnings

from ditto_research.media.output_files import (
    OutputReservation,
    process_alive,
    remove_stale_temporaries,
    reserve_output,
    temp_name,
)

__all__ = ["OutputReservation", "process_alive", "remove_stale_temporaries", "reserve_output", "temp_name"]

warnings.warn(
    "ditto_research.render.output_files moved to ditto_research.media.output_files",
    DeprecationWarning,
    stacklevel=2,
)
