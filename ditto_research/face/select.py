"""``face.select``: which face registration uses when an image has several (no heavy imports: the config
schema checks it)."""

from __future__ import annotations

from ditto_research.errors import ConfigError

__all__ = ["SELECT_NAMES", "check_select"]

SELECT_NAMES = ("largest", "center")


def check_select(select: object) -> None:
    """ "largest", "center", or an int >= 0 (the i-th face from the left); else ConfigError."""
    if isinstance(select, bool) or not (select in SELECT_NAMES or (isinstance(select, int) and select >= 0)):
        raise ConfigError(
            f"face.select={select!r} is not valid; choose largest, center, or a face number 0, 1, ... "
            "(counted from the left)"
        )
