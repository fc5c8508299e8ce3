"""The package installs like real software: a plain wheel carries its configs and composes them from anywhere,
and its import names live under ``ditto_research`` (beside Hugging Face's top-level ``evaluate``)."""

from __future__ import annotations

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
