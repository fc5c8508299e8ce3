"""``ditto_research.evaluate.samplers``, the sampler benchmark's old home: the command and the names still
answer, forwarding to benchmarks/samplers.py and ditto_research.diffusion.reference."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_importing_warns_and_the_library_names_are_the_moved_ones() -> None:
    sys.modules.pop("ditto_research.evaluate.samplers", None)
    with pytest.warns(DeprecationWarning, match="the benchmark is `python benchmarks/samplers.py`"):
        old = importlib.import_module("ditto_research.evaluate.samplers")
    from ditto_research.diffusion import reference

    assert old.Window is reference.Window
    assert old.original_structure_ddim is reference.original_structure_ddim
    assert old.relative_errors is reference.relative_errors
    assert old.BENCHMARK == REPO / "benchmarks" / "samplers.py"
    with pytest.raises(AttributeError):
        old.no_such_name  # noqa: B018


def test_the_old_command_runs_the_benchmark_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ditto_research.evaluate.samplers", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python benchmarks/samplers.py")
    assert "deprecated; run python benchmarks/samplers.py" in proc.stderr


def test_the_script_s_names_answer_from_the_script() -> None:
    code = (
        "import warnings; warnings.simplefilter('ignore', DeprecationWarning); "
        "from ditto_research.evaluate import samplers; "
        "print(samplers.REFERENCE_STEPS, samplers.make_window.__code__.co_filename)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    steps, where = proc.stdout.split()
    assert steps == "50" and Path(where) == REPO / "benchmarks" / "samplers.py"
