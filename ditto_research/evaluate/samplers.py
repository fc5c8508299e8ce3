"""Deprecated: the sampler benchmark is ``python benchmarks/samplers.py`` (a script beside the other
benchmarks; its library parts are :mod:`ditto_research.diffusion.reference`).

``python -m ditto_research.evaluate.samplers [ARGS]`` still runs that script from a source checkout, after a
note on stderr. Importing this module warns; its former names still answer (``Window``,
``original_structure_ddim``, ``relative_errors`` from the library, the rest from the script).
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from ditto_research.errors import ConfigError, DittoError

NEW_COMMAND = "python benchmarks/samplers.py"
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "samplers.py"
_LIBRARY_NAMES = ("REFERENCE_GUIDANCE", "Window", "original_structure_ddim", "relative_errors")
_SCRIPT_NAMES = (
    "FAST_MIN_SPEEDUP",
    "FAST_SAMPLER",
    "GUIDANCE",
    "NOTES",
    "REFERENCE_STEPS",
    "Row",
    "build_rows",
    "load_average",
    "make_window",
    "measure",
    "parse_args",
    "render_report",
    "write_plot",
)
_MODULE_NAME = "ditto_research_benchmarks_samplers"


def _script() -> ModuleType:
    """benchmarks/samplers.py of this source checkout, loaded once as a module."""
    loaded = sys.modules.get(_MODULE_NAME)
    if loaded is not None:
        return loaded
    if not BENCHMARK.is_file():
        raise ConfigError(
            f"the sampler benchmark is a script of the source checkout, and {BENCHMARK} is not there; "
            f"run `{NEW_COMMAND}` in a clone of the repository"
        )
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module  # dataclasses look their module up while the script runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODULE_NAME]
        raise
    return module


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/samplers.py`` with ``argv`` (None: the command line)."""
    return _script().main(argv)


def __getattr__(name: str) -> Any:
    if name in _LIBRARY_NAMES:
        from ditto_research.diffusion import reference

        return getattr(reference, name)
    if name in _SCRIPT_NAMES:
        return getattr(_script(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


warnings.warn(
    f"ditto_research.evaluate.samplers moved: the benchmark is `{NEW_COMMAND}`, its library parts are "
    "ditto_research.diffusion.reference",
    DeprecationWarning,
    stacklevel=2,
)

if __name__ == "__main__":
    print(f"note: this command is deprecated; run {NEW_COMMAND}", file=sys.stderr)
    try:
        sys.exit(main())
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
