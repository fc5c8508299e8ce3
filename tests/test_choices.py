"""The one table of config choices: torch-free, and its checks name what is allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ditto_research import choices
from ditto_research.choices import BACKEND_PRECISIONS, check_choice, check_precision
from ditto_research.errors import ConfigError


def test_the_table_and_the_schemas_import_without_torch():
    code = (
        "import sys, ditto_research.choices; assert 'torch' not in sys.modules\n"
        "import ditto_research.config.schema; assert 'torch' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_check_choice_is_one_line_naming_the_choices():
    check_choice("control.noise", "numpy", choices.NOISE_KINDS)
    with pytest.raises(ConfigError) as info:
        check_choice("control.noise", "jax", choices.NOISE_KINDS)
    assert str(info.value) == "control.noise='jax' is not valid; choose one of: torch, numpy"
    with pytest.raises(ConfigError, match=r"fade_type='x' is not valid; choose one of: '', d0, s$"):
        check_choice("fade_type", "x", choices.FADE_TYPES)


def test_check_precision_names_what_the_backend_runs():
    for backend, precisions in BACKEND_PRECISIONS.items():
        assert backend in choices.BACKEND_NAMES and set(precisions) <= set(choices.PRECISIONS)
        for precision in precisions:
            check_precision(backend, precision)
    with pytest.raises(ConfigError) as info:
        check_precision("onnx", "bf16")
    assert str(info.value) == (
        "backend.precision='bf16' is not available with backend=onnx; choose one of: fp32, fp16"
    )
    with pytest.raises(ConfigError, match="backend.lmdm_precision='int8' is not available"):
        check_precision("pytorch", "int8", "backend.lmdm_precision")


def test_literal_types_and_their_lists_agree():
    assert choices.LMDM_ORDERS == ("fast", "reference")
    assert choices.NOISE_KINDS == ("torch", "numpy")
    assert choices.FACE_NAMES == ("auto", "official", "mediapipe", "given")
    assert choices.FADE_TYPES == ("", "d0", "s")
    assert set(choices.SAMPLER_OPTIONS) == set(choices.SAMPLER_NAMES)
    assert choices.AUDIO_ENCODER_NAMES == ("auto", "hubert_onnx", "hubert_torch", "untrained", "precomputed")
