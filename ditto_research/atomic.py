"""Writing a file so that nobody ever sees half of it: the one home for it.

Every writer fills a hidden temporary file in the target's own folder (``.NAME.XXXX.tmp``, so the rename
never crosses a file system), flushes it to disk and renames it onto the target: a killed job, a full disk or
an exception leaves the whole new file or the previous one, never a part, and no temporary file behind.
Concurrent writers each have their own temporary file; the last rename wins.

* :func:`write_atomically` — ``write(f)`` gets a binary file object (np.savez, torch.save, bytes);
* :func:`write_text_atomically` — ``write(f)`` gets a UTF-8 text file object (newline="" for csv);
* :func:`write_path_atomically` — ``write(path)`` gets the temporary *path*, with the target's suffix kept,
  for writers that open files themselves and pick the format from the extension (cv2.imwrite, espeak-ng).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["write_atomically", "write_path_atomically", "write_text_atomically"]


def write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Run ``write`` on a binary temporary file beside ``path``, flush it to disk, rename it onto ``path``."""

    def fill(temp: Path) -> None:
        with temp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    return _replace(Path(path), fill, suffix=".tmp")


def write_text_atomically(path: Path, write: Callable[[IO[str]], object]) -> Path:
    """:func:`write_atomically` with a UTF-8 text file object (``newline=""``: csv writes its own endings)."""

    def fill(temp: Path) -> None:
        with temp.open("w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    return _replace(Path(path), fill, suffix=".tmp")


def write_path_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Run ``write(temp_path)`` (the temporary file keeps ``path``'s suffix), then rename it onto ``path``."""
    path = Path(path)
    return _replace(path, write, suffix=path.suffix)


def _replace(path: Path, fill: Callable[[Path], object], *, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    temp = Path(name)
    try:
        fill(temp)
        os.replace(temp, path)
    finally:  # after a successful replace the temporary name no longer exists
        temp.unlink(missing_ok=True)
    return path
