"""The app shell: every Hydra command fails, stops and exits the same way.

Each command is started as ``python -m`` starts it (``runpy`` with ``__main__``), with config validation
replaced by a failure: a bug, a user error, a SIGTERM. What comes out must be the shell's, whichever command.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ditto_research.apps import BUG_LINE, exit_on_errors
from ditto_research.errors import InputError

# Each command, with the overrides it needs to reach config validation.
APPS = {
    "ditto_research.infer": ["model=tiny"],
    "ditto_research.evaluate.run": ["model=tiny", "logger=none"],
    "ditto_research.serve": ["model=tiny"],
    "ditto_research.export.onnx": ["model=tiny", "output_dir=onnx"],
    "ditto_research.export.tensorrt": [],
}

# Validation (every command calls ditto_research.config.to_config first) fails as $FAIL says.
FAILING = """
import os, runpy, signal, sys, time

import ditto_research.config
from ditto_research.errors import InputError


def fail(*args, **kwargs):
    how = os.environ["FAIL"]
    if how == "bug":
        raise RuntimeError("simulated bug")
    if how == "input":
        raise InputError("simulated input problem")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # the handler raises in this thread first


ditto_research.config.to_config = fail
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def start_failing(module: str, how: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", FAILING, module, *APPS[module]],
        cwd=cwd,
        env={**os.environ, "FAIL": how},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("module", APPS)
def test_a_bug_is_its_traceback_then_the_bug_line_and_exit_1(module, tmp_path):
    proc = start_failing(module, "bug", tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback (most recent call last)" in proc.stderr and "RuntimeError: simulated bug" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == BUG_LINE, proc.stderr[-2000:]


@pytest.mark.parametrize("module", APPS)
def test_a_user_error_is_one_line_and_exit_2(module, tmp_path):
    proc = start_failing(module, "input", tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: simulated input problem"] and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("module", APPS)
def test_a_stop_is_the_interrupted_line_and_128_plus_the_signal(module, tmp_path):
    proc = start_failing(module, "stop", tmp_path)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("interrupted: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("module", APPS)
def test_a_bad_override_is_one_line_before_hydra_starts(module, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", module, *APPS[module], "nosuchkey=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: nosuchkey is not a key"), proc.stderr[-2000:]
    assert not (tmp_path / "outputs").exists()  # refused before Hydra made its run folder


def test_exit_on_errors_maps_each_kind(capsys):
    with pytest.raises(SystemExit) as info, exit_on_errors():
        raise InputError("the file x is missing")
    assert info.value.code == 2 and capsys.readouterr().err == "error: the file x is missing\n"
    with pytest.raises(SystemExit) as info, exit_on_errors():
        raise KeyError("oops")
    err = capsys.readouterr().err
    assert info.value.code == 1 and "KeyError: 'oops'" in err and err.strip().endswith(BUG_LINE)
    with pytest.raises(KeyboardInterrupt), exit_on_errors():  # a stop is exit_on_interrupt's
        raise KeyboardInterrupt


def test_the_bug_line_is_still_importable_from_infer():
    from ditto_research.infer import BUG_LINE as from_infer

    assert from_infer == BUG_LINE
