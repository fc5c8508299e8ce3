"""Where ditto-research keeps what it makes for itself: ``$DITTO_CACHE_DIR`` or ``~/.cache/ditto_research``.

Every use goes through :func:`cache_folder` (the bundled example, the built-in evaluation set, Hydra's run
folders when the current folder is not writable), so a ``DITTO_CACHE_DIR`` that cannot hold files (a regular
file, a path under ``/proc``, a read-only folder) is one :class:`InputError` naming the variable and the fix,
raised before a command reserves or writes anything, instead of an OSError from deep inside a run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ditto_research.errors import InputError

__all__ = ["CACHE_ENV", "cache_folder", "cache_root", "folder_write_error", "is_cache_root_chosen"]

CACHE_ENV = "DITTO_CACHE_DIR"
DEFAULT_CACHE = Path("~") / ".cache" / "ditto_research"


def is_cache_root_chosen() -> bool:
    """True when the user set ``DITTO_CACHE_DIR`` (a problem with it is theirs to fix, not to work around)."""
    return bool(os.environ.get(CACHE_ENV))


def cache_root() -> Path:
    """``$DITTO_CACHE_DIR`` (``~`` expanded), else ``~/.cache/ditto_research``; not created or checked."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cache_folder(*parts: str) -> Path:
    """``<cache root>/<parts...>``, created and checked to take files.

    Raises:
        InputError: the folder cannot be made or written; the line names ``DITTO_CACHE_DIR`` and the fix.
    """
    root = cache_root()
    folder = root.joinpath(*parts)
    error = folder_write_error(folder)
    if error is None:
        return folder
    reason = "it is a file, not a folder" if root.exists() and not root.is_dir() else error.strerror or error
    if is_cache_root_chosen():
        raise InputError(
            f"{CACHE_ENV}={os.environ[CACHE_ENV]} cannot hold the cache ({reason}); set {CACHE_ENV} to a "
            f"writable folder, or unset it to use {DEFAULT_CACHE}"
        ) from error
    raise InputError(
        f"the cache folder {root} cannot be used ({reason}); set {CACHE_ENV} to a writable folder"
    ) from error


def folder_write_error(folder: Path) -> OSError | None:
    """Create ``folder`` if needed and write a file into it: the OSError that stops that, or None (the one
    writable-folder probe: the cache, Hydra's run folder, the CLI's output and the exporter use it)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e
    return None
