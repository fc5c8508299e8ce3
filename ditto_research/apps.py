"""One shell for every Hydra command, so they all fail, stop and exit the same way.

    APP = HydraApp("infer", stopped="no output written")

    @APP.main
    def main(cfg: DictConfig) -> None:
        run(cfg)

    if __name__ == "__main__":
        APP.run(main)

What a user sees, whichever command it is:

=====================  ====================================================================================
exit 0                 done
exit 2                 a problem with the input, the configuration or the environment (any
                       :class:`DittoError`, a bad override included): one line ``error: ...`` on stderr
exit 1                 a bug of ours: the whole traceback, then :data:`BUG_LINE`
exit 130 / 143 / 129   stopped by SIGINT / SIGTERM / SIGHUP: ``interrupted: <what was left>``
=====================  ====================================================================================

``main`` keeps the error handling when it is called directly (tests, ``python -c``); ``run`` adds what only
the process entry point may do: signal handlers and the command-line pre-check
(:func:`ditto_research.command_line.check_command_line_or_exit`: a bad override is one line, not Hydra's
report).
A command with its own way of stopping (the server shuts down cleanly and exits 0) handles those signals
itself while it runs; the shell's handlers cover the rest of the process's life.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import hydra
from omegaconf import DictConfig

from ditto_research.command_line import check_command_line_or_exit
from ditto_research.config import CONF_DIR
from ditto_research.errors import DittoError
from ditto_research.interrupts import exit_on_interrupt, install_signal_handlers

__all__ = ["BUG_LINE", "HydraApp", "exit_on_errors"]

BUG_LINE = (
    "error: an unexpected failure (the traceback above): this is a bug in ditto-research, not in your "
    "input; please report it with the traceback and the command line"
)


@contextlib.contextmanager
def exit_on_errors() -> Iterator[None]:
    """A DittoError becomes ``error: <message>`` and exit 2; any other exception is a bug: its traceback,
    :data:`BUG_LINE` and exit 1. Stops (KeyboardInterrupt, Interrupted) and exits pass through."""
    try:
        yield
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Exception:  # noqa: BLE001 - a bug: keep the whole traceback, then say so
        traceback.print_exc()
        print(BUG_LINE, file=sys.stderr, flush=True)
        sys.exit(1)


@dataclass(frozen=True)
class HydraApp:
    """A Hydra command: its primary config, and the line that says what a stopped run left behind.

    Attributes:
        config_name: the primary config (``conf/<name>.yaml``, or a schema in Hydra's ConfigStore).
        stopped: the end of ``interrupted: ...`` after SIGINT / SIGTERM / SIGHUP.
        config_path: Hydra's config folder (None: the ConfigStore only).
    """

    config_name: str
    stopped: str = "no output written"
    config_path: str | None = str(CONF_DIR)

    def main(self, task: Callable[[DictConfig], None]) -> Callable[[], None]:
        """Decorator: ``task`` as Hydra's main, with :func:`exit_on_errors` around it (inside Hydra, which
        would otherwise print its own shortened traceback and exit 1 for a user error)."""

        @functools.wraps(task)  # Hydra unwraps it: the job keeps the task's name and module
        def guarded(cfg: DictConfig) -> None:
            with exit_on_errors():
                task(cfg)

        return hydra.main(config_path=self.config_path, config_name=self.config_name, version_base="1.3")(
            guarded
        )

    def run(self, main: Callable[[], None]) -> None:
        """The process entry point: signals unwind like Ctrl-C, a bad override is one line, then ``main``."""
        install_signal_handlers()  # SIGTERM / SIGHUP: temporaries removed, threads stopped, as for Ctrl-C
        with exit_on_interrupt(self.stopped), exit_on_errors():
            check_command_line_or_exit(self.config_name)
            main()
