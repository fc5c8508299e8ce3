"""Output files that appear whole or not at all, whoever else writes into the same folder.

Temporary files are hidden siblings of the output, named with the writing process's id::

    .<stem>.<pid>-<12 hex>.<tag>.mp4      the video being encoded / muxed (tag: video, part)
    .<name>.lock                          the reservation of <name> while a run renders it (holds the pid)

- :func:`reserve_output` takes ``<name>`` for this process before any work (an exclusive create of the lock
  file): a second run asking for the same new output is refused at once, not after rendering everything.
- :func:`remove_stale_temporaries`: a run killed by SIGKILL cannot clean up; the next run into that folder
  removes the temporaries of this naming scheme whose process is gone and which are older than its own start,
  and nothing else.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from ditto_research.errors import InputError

__all__ = ["OutputReservation", "process_alive", "remove_stale_temporaries", "reserve_output", "temp_name"]

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)-[0-9a-f]{12}\.(?:video|part)\.mp4$")
_LOCK = re.compile(r"^\.(?P<name>.+)\.lock$")


def process_alive(pid: int) -> bool:
    """True when a process ``pid`` exists (ours or another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_name(output: Path, tag: str, token: str) -> Path:
    """The hidden temporary file ``tag`` of ``output`` for this process (``token``: 12 hex digits)."""
    return output.parent / f".{output.stem}.{os.getpid()}-{token}.{tag}.mp4"


def _owner(path: Path) -> int | None:
    """The process id a temporary or lock file of this scheme belongs to (None: not one of ours)."""
    match = _TEMP.match(path.name)
    if match:
        return int(match.group("pid"))
    if _LOCK.match(path.name):
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None
    return None


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def remove_stale_temporaries(folder: Path, started: float) -> list[Path]:
    """Delete the temporaries and locks of this naming scheme in ``folder`` whose writing process is gone and
    that were last modified before ``started`` (a time.time()); returns what was deleted."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        pid = _owner(path)
        if pid is None or pid == os.getpid() or process_alive(pid):
            continue
        try:
            if path.stat().st_mtime >= started:
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left in %s by a run that was killed", len(removed), folder)
    return removed


class OutputReservation:
    """The claim of one process on a new output path (a hidden lock file); release it when done."""

    def __init__(self, output: Path, lock: Path | None) -> None:
        self.output, self.lock = output, lock

    def release(self) -> None:
        if self.lock is not None:
            self.lock.unlink(missing_ok=True)
            self.lock = None

    def __enter__(self) -> OutputReservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def reserve_output(output: str | Path, overwrite: bool, started: float | None = None) -> OutputReservation:
    """Claim ``output`` for this process, after cleaning up what killed runs left in its folder.

    Raises InputError when ``output`` is a folder, already exists (without ``overwrite``), or is being
    written by another live run. A reservation this process already holds is shared (not taken again).
    """
    output = Path(output).expanduser().resolve()
    if output.is_dir():
        raise InputError(f"output {output} is a folder; give a file name such as {output / 'out.mp4'}")
    remove_stale_temporaries(output.parent, time.time() if started is None else started)
    lock = output.parent / f".{output.name}.lock"
    for _ in range(3):  # a stale lock is removed once and the claim retried
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _owner(lock)
            if pid is None and _age_s(lock) < 5.0:
                pid = -1  # just created by another run that has not written its pid yet
            if pid == os.getpid():
                return OutputReservation(output, None)  # ours already (the CLI reserved it before loading)
            if pid == -1 or (pid is not None and process_alive(pid)):
                who = f" (process {pid})" if pid > 0 else ""
                raise InputError(
                    f"output {output} is being written by another run{who}; wait for it or choose another "
                    "output path"
                ) from None
            lock.unlink(missing_ok=True)  # its run was killed
            continue
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(str(os.getpid()))
        if output.exists() and not overwrite:
            lock.unlink(missing_ok=True)
            raise InputError(
                f"output {output} already exists; pass overwrite=true or choose another output path"
            )
        return OutputReservation(output, lock)
    raise InputError(f"cannot reserve output {output}: its lock file {lock} keeps reappearing")
