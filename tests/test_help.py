"""``--help`` of the apps: every preset / sweep file is listed, the checkpoint hint is the current one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ditto_research.config import CONF_DIR

PRESETS = sorted(p.stem for p in (CONF_DIR / "preset").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))


def _help(module: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def infer_help() -> str:
    return _help("ditto_research.infer")


def _section(text: str, start: str, end: str) -> list[str]:
    """The lines between the line starting with ``start`` and the next one starting with ``end``."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    last = next(i for i, line in enumerate(lines) if i > first and line.startswith(end))
    return lines[first + 1 : last]


def test_presets_exist() -> None:
    assert {"quality", "fast", "realtime"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_infer_help_describes_every_preset(infer_help: str, preset: str) -> None:
    described = [line.split()[0] for line in _section(infer_help, "Presets", "Examples") if line.strip()]
    assert preset in described, f"conf/preset/{preset}.yaml is missing from the --help footer"


def test_infer_help_names_the_checkpoint_commands(infer_help: str) -> None:
    assert "python -m ditto_research.checkpoints download" in infer_help
    assert (
        'hf download digital-avatar/ditto-talkinghead --include "ditto_cfg/*" --include "ditto_pytorch/*" '
        "--local-dir checkpoints"
    ) in infer_help
    assert "huggingface-cli" not in infer_help


def test_evaluate_help_lists_every_sweep_and_the_default_logger() -> None:
    text = _help("ditto_research.evaluate.run")
    line = next(ln for ln in text.splitlines() if ln.startswith("Ready-made sweeps"))
    assert "sweep=NAME" in line and "+sweep" not in text
    assert [s for s in SWEEPS if s not in line] == []
    assert "logger=wandb (default" in text and "[wandb]" not in text


ORIGINAL_NAMES = [
    "motion.overlap_v2",
    "motion.smo_k_d",
    "face.smo_k_s",
    "motion.fix_kp_cond",
    "motion.use_sc",
    "control.delta_eye_open_n",
]


@pytest.mark.parametrize("key", ORIGINAL_NAMES)
def test_keys_with_the_originals_names_are_explained(infer_help: str, key: str) -> None:
    """The original's private names stay (its config pickles use them); ``--help`` and the README say what
    each one does, and each is a real key of the composed config."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from ditto_research.config import compose

    explained = _section(infer_help, "Keys that keep the original Ditto's names", "Every key is documented")
    assert any(line.split()[0] == key and len(line.split()) > 3 for line in explained)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"| `{key}` | " in readme
    assert OmegaConf.select(compose("infer", []), key) is not None
