from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.export.tiny_exports import tiny_export


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_onnx(["decoder"], ["precision=fp16"])`` -> folder holding verified tiny exports."""
    base = tmp_path_factory.getbasetemp()
    return lambda networks, overrides=None: tiny_export(base, list(networks), overrides)
