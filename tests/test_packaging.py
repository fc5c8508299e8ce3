"""The package installs like real software: a plain wheel carries its configs and composes them from anywhere,
and its import names live under ``ditto_research`` (beside Hugging Face's top-level ``evaluate``). Also the
checks of tools/check_resolution.py (the CI step that resolves the dependencies for every Python)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout and installed (no dependencies) into a folder of its own."""
    base = tmp_path_factory.mktemp("wheel")
    tree = base / "tree"  # a copy of what the sdist holds: the build writes build/ and egg-info beside it
    shutil.copytree(
        REPO / "ditto_research",
        tree / "ditto_research",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, tree / name)
    build = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(base / "dist"),
            str(tree),
        ],
        cwd=base,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (base / "dist").glob("ditto_research-*.whl")
    target = base / "site"
    install = _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        cwd=base,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    return wheel, target, env, elsewhere


def test_wheel_carries_the_configs_and_only_the_package(installed):
    wheel, *_ = installed
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"ditto_research"}
    conf = {name for name in names if name.startswith("ditto_research/conf/")}
    expected = {
        f"ditto_research/conf/{p.relative_to(REPO / 'ditto_research' / 'conf').as_posix()}"
        for p in (REPO / "ditto_research" / "conf").rglob("*.yaml")
    }
    assert expected and expected <= conf
    assert "ditto_research/py.typed" in names


def test_installed_wheel_composes_from_another_directory(installed):
    _, target, env, elsewhere = installed
    code = (
        "import ditto_research; from ditto_research.config import compose, to_config; "
        "cfg = to_config(compose('infer', ['model=tiny', '+preset=quality'])); "
        "print(ditto_research.__file__); print(cfg.model.name, cfg.sampler.steps)"
    )
    proc = _run([sys.executable, "-c", code], cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, values = proc.stdout.strip().splitlines()
    assert Path(where).is_relative_to(target), where  # the installed copy, not this checkout
    assert values == "tiny 50"


def test_installed_cli_help_works_anywhere(installed):
    _, _, env, elsewhere = installed
    proc = _run([sys.executable, "-m", "ditto_research.infer", "--help"], cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model: ditto, tiny, untrained" in proc.stdout
    proc = _run([sys.executable, "-m", "ditto_research.evaluate.run", "--help"], cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_imports_beside_a_top_level_evaluate_package(tmp_path):
    """Hugging Face's ``evaluate`` is a top-level package: both must import in one process."""
    standin = tmp_path / "hf" / "evaluate"
    standin.mkdir(parents=True)
    (standin / "__init__.py").write_text(
        "STANDIN = 'huggingface evaluate'\ndef load(name):\n    return name\n"
    )
    code = (
        "import evaluate, ditto_research.evaluate.run as ours, ditto_research.export.onnx as exp; "
        "print(evaluate.STANDIN, evaluate.load('x')); print(ours.__name__, exp.__name__)"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "hf")}
    proc = _run([sys.executable, "-c", code], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "huggingface evaluate x",
        "ditto_research.evaluate.run ditto_research.export.onnx",
    ]


# ---- tools/check_resolution.py: the report checks, no network ---------------------------------------------


@pytest.fixture(scope="module")
def resolution():
    spec = importlib.util.spec_from_file_location("check_resolution", REPO / "tools" / "check_resolution.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _report(*pins: str) -> dict:
    """A ``pip install --report`` that installs ``name==version`` for each pin."""
    items = []
    for pin in pins:
        name, version = pin.split("==")
        items.append({"metadata": {"name": name, "version": version}, "requested": name == "ditto-research"})
    return {"version": "1", "install": items}


OK_PINS = ("ditto-research==0.1.0", "torch==2.13.0", "numpy==2.2.6", "wandb==0.31.0")


@pytest.mark.parametrize("torch", ["2.13.0", "2.13.0+cpu"])
def test_resolution_check_accepts_the_pinned_torch_and_numpy_2(resolution, torch):
    pins = (*OK_PINS[:1], f"torch=={torch}", *OK_PINS[2:])
    check = resolution.check_report(_report(*pins), torch="2.13.0")
    assert check.problems == ()
    assert check.versions == {"ditto-research": "0.1.0", "torch": torch, "numpy": "2.2.6", "wandb": "0.31.0"}


def test_resolution_check_rejects_a_second_torch(resolution):
    check = resolution.check_report(_report(*OK_PINS, "torch==2.15.0"), torch="2.13.0")
    assert check.problems == ("torch chosen 2 times (2.13.0, 2.15.0)",)


def test_resolution_check_rejects_another_torch_and_numpy_1(resolution):
    pins = ("ditto-research==0.1.0", "torch==2.14.1", "numpy==1.26.4")
    check = resolution.check_report(_report(*pins), torch="2.13.0")
    assert check.problems == (
        "torch 2.14.1 chosen, the pin is torch==2.13.0",
        "numpy 1.26.4 chosen, numpy >= 2 expected",
    )


def test_resolution_check_fails_without_a_resolution(resolution):
    assert resolution.check_report(None, torch="2.13.0").problems == ("pip found no resolution",)
    check = resolution.check_report(_report("wandb==0.31.0"), torch="2.13.0")
    assert check.problems == (
        "ditto-research is not in the resolution",
        "torch is not in the resolution",
        "numpy is not in the resolution",
    )


def test_resolution_reads_what_pip_could_not_meet(resolution):
    """Both ways pip names a requirement it gave up on: at once, and in a conflict after backtracking."""
    output = (
        "ERROR: Could not find a version that satisfies the requirement python_speech_features==0.6 "
        "(from ditto-research) (from versions: none)\n"
        "The conflict is caused by:\n"
        "    hydra-core 1.3.2 depends on antlr4-python3-runtime==4.9.*\n"
        "\n"
        "To fix this you could try to:\n"
        "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io\n"
    )
    assert resolution.UNSATISFIED.findall(output) == [
        "python_speech_features==0.6",
        "antlr4-python3-runtime==4.9.*",
    ]
    assert resolution.pip_error(output) == (
        output.splitlines()[0],
        "The conflict is caused by:",
        "    hydra-core 1.3.2 depends on antlr4-python3-runtime==4.9.*",
        "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io",
    )
    platforms = resolution.manylinux_platforms()
    assert platforms[0] == "manylinux_2_28_x86_64"
    assert {"manylinux_2_27_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} < set(platforms)
