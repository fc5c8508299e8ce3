"""Command-line plumbing of the Hydra apps, before Hydra starts: every override composed once so a bad one
is one line (:func:`check_command_line`), file names Hydra's lexer rejects quoted
(:func:`quote_override_values`), and Hydra's run folder moved somewhere writable when the current folder is
not (:func:`ensure_writable_run_dir`).
:class:`ditto_research.apps.HydraApp` runs :func:`check_command_line_or_exit` for every app.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from ditto_research.cache import folder_write_error
from ditto_research.config import compose
from ditto_research.errors import ConfigError, DittoError, InputError

__all__ = [
    "check_command_line",
    "check_command_line_or_exit",
    "ensure_writable_run_dir",
    "quote_override_values",
    "writable_run_root",
]


# Hydra command-line flags that take a value, and those after which there is nothing for us to check.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}
_FLAGS_HYDRA_HANDLES = {
    "-m",
    "--multirun",
    "-h",
    "--help",
    "--hydra-help",
    "--version",
    "-i",
    "--info",
    "-sc",
    "--shell-completion",
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-cd",
    "--config-dir",
    "--experimental-rerun",
}


def check_command_line(config_name: str, args: Sequence[str]) -> None:
    """Compose ``args`` (a CLI's ``sys.argv[1:]``) once before Hydra does, so a bad override is one
    ConfigError line naming the allowed keys or options instead of Hydra's multi-line report. Multirun, help
    and config-path flags are left to Hydra."""
    overrides: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in _FLAGS_HYDRA_HANDLES:
            return
        if flag in _FLAGS_WITH_VALUE:
            skip_value = "=" not in arg
            continue
        if arg.startswith("-") and not arg.startswith("--"):
            continue
        if not arg.startswith("-") and not arg.lstrip("+~").startswith("hydra"):
            overrides.append(arg)
    compose(config_name, overrides)


def _parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        OverridesParser.create().parse_override(override)
    except (HydraException, OmegaConfBaseException, ValueError):
        return False
    return True


def _hydra_quote(value: str) -> str:
    """``value`` as a single-quoted Hydra string: quotes escaped, and the backslashes before a quote or the
    closing quote doubled (Hydra's escaping rule)."""
    out, run = [], 0
    for ch in value:
        if ch == "\\":
            run += 1
            continue
        if ch == "'":
            out.append("\\" * (2 * run) + "\\'")
        else:
            out.append("\\" * run + ch)
        run = 0
    out.append("\\" * (2 * run))
    return "'" + "".join(out) + "'"


def quote_override_values(args: Sequence[str]) -> list[str]:
    """Command-line overrides whose value Hydra's lexer rejects (spaces next to other symbols, non-ASCII,
    parentheses, quotes, ...: file names as people have them) get their value quoted, so
    ``source=my face é (1).png`` means that file. Values that parse, flags, and values that start like a list,
    a dict or a quoted string are left alone.

    Raises:
        ConfigError: an override that does not parse even quoted (one line saying how to quote it).
    """
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if arg.startswith("-") or not sep or _parses(arg):
            out.append(arg)
            continue
        structured = value[:1] in ("'", '"', "[", "{") or "${" in value
        quoted = f"{key}={_hydra_quote(value)}"
        if structured or not _parses(quoted):
            raise ConfigError(
                f"cannot read the override {arg!r} (a list, dict, quote or ${{...}} not closed?); to pass it "
                f"as text, quote the value for Hydra: {key}=\"'...'\" in the shell"
            )
        out.append(quoted)
    return out


def _writable(folder: Path) -> bool:
    return folder_write_error(folder) is None


def writable_run_root(app: str) -> Path | None:
    """Where Hydra's run folders go when the current folder is not writable: ``outputs/<app>`` in the cache
    (:mod:`ditto_research.cache`), else in the system's temporary folder (None: no writable place found).

    Raises:
        InputError: ``DITTO_CACHE_DIR`` is set but cannot hold files (the user chose it: no silent fallback).
    """
    from ditto_research.cache import cache_folder, is_cache_root_chosen  # lazily: it reads the environment

    try:
        return cache_folder("outputs", app)
    except InputError:
        if is_cache_root_chosen():
            raise
    fallback = Path(tempfile.gettempdir()) / "ditto_research" / "outputs" / app
    return fallback if _writable(fallback) else None


def ensure_writable_run_dir(app: str, args: list[str]) -> list[str]:
    """``args`` with ``hydra.run.dir`` / ``hydra.sweep.dir`` moved to :func:`writable_run_root` (and a
    warning line) when the current folder, where they go by default (``outputs/``), is not writable and the
    command line does not set them; otherwise unchanged."""
    default = Path.cwd() / "outputs"
    if default.is_dir():
        writable = _writable(default)
    else:  # "outputs" must be creatable: no file of that name, a writable folder
        writable = not default.exists() and os.access(Path.cwd(), os.W_OK | os.X_OK)
    if writable or any(a.lstrip("+").startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in args):
        return args
    root = writable_run_root(app)
    if root is None:
        return args  # Hydra reports it
    stamp = "${now:%Y-%m-%d_%H-%M-%S}"
    print(
        f"warning: the current folder {Path.cwd()} is not writable; run logs and results go to {root}",
        file=sys.stderr,
    )
    return [
        *args,
        f"hydra.run.dir={_hydra_quote(f'{root}/{stamp}')}",
        f"hydra.sweep.dir={_hydra_quote(f'{root}/multirun/{stamp}')}",
    ]


def check_command_line_or_exit(config_name: str) -> None:
    """:func:`check_command_line` on ``sys.argv[1:]`` for an app's ``__main__``: values Hydra cannot lex are
    quoted in place (:func:`quote_override_values`), Hydra's run folder moves somewhere writable when the
    current folder is not (:func:`ensure_writable_run_dir`), and a bad override is one line on stderr and exit
    code 2, before Hydra starts."""
    try:
        sys.argv[1:] = ensure_writable_run_dir(config_name, quote_override_values(sys.argv[1:]))
        check_command_line(config_name, sys.argv[1:])
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
