"""Stopping a command cleanly: SIGINT, SIGTERM and SIGHUP unwind the main thread like an exception.

A stop becomes :class:`Interrupted` (SIGINT stays ``KeyboardInterrupt``) raised in the main thread, so
every ``finally`` and ``except BaseException`` on the way out runs: the video writer kills its ffmpeg child
and deletes its temporary files, the pipeline runner stops and joins its stage threads, the output
reservation is released. The command then prints one line and exits with 128 + the signal number (130, 143,
129). SIGKILL cannot be caught: the next run into the folder removes what such a run left
(:func:`ditto_research.media.output_files.remove_stale_temporaries`).

    install_signal_handlers()
    with exit_on_interrupt("no output written"):
        main()
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["Interrupted", "exit_on_interrupt", "install_signal_handlers"]


class Interrupted(BaseException):
    """The process was asked to stop (SIGTERM / SIGHUP); a BaseException so ``except Exception`` lets it
    through."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread (no-op off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, _raise)


def exit_code(error: BaseException) -> int:
    """128 + the signal number: 130 for SIGINT (Ctrl-C), 143 for SIGTERM, 129 for SIGHUP."""
    if isinstance(error, Interrupted):
        return 128 + error.signum
    return 128 + signal.SIGINT


@contextlib.contextmanager
def exit_on_interrupt(what: str = "no output written") -> Iterator[None]:
    """Turn a stop into ``interrupted: <what>`` on stderr and exit 128 + signal (no traceback)."""
    try:
        yield
    except (KeyboardInterrupt, Interrupted) as e:
        # A second signal while exiting must not print a traceback either.
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            if hasattr(signal, name) and threading.current_thread() is threading.main_thread():
                signal.signal(getattr(signal, name), signal.SIG_IGN)
        print(f"interrupted: {what}", file=sys.stderr, flush=True)
        sys.exit(exit_code(e))
