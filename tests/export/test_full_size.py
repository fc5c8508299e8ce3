"""Full-size exports (model=untrained), verified network by network against torch (slow: minutes on a CPU)."""

from __future__ import annotations

import pytest

from ditto_research.backends import RENDER_NETWORKS
from ditto_research.export.onnx import run_export
from tests.export.tiny_exports import export_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", RENDER_NETWORKS)
def test_full_size_fp32_export_verifies(tmp_path, name):
    cfg = export_config(tmp_path, ["model=untrained", f"networks=[{name}]"])
    (result,) = run_export(cfg, log=print)
    (report,) = result.reports
    assert report.passed and report.max_rel < 1e-4, report.line()


def test_full_size_decomposed_warp_verifies(tmp_path):
    cfg = export_config(tmp_path, ["model=untrained", "networks=[warp_network]", "grid_sample=decomposed"])
    (result,) = run_export(cfg, log=print)
    assert result.reports[0].max_rel < 1e-4, result.reports[0].line()


@pytest.mark.parametrize("name", ["appearance_extractor", "warp_network", "decoder"])
def test_full_size_fp16_export_verifies(tmp_path, name):
    cfg = export_config(tmp_path, ["model=untrained", f"networks=[{name}]", "precision=fp16"])
    (result,) = run_export(cfg, log=print)
    assert result.reports[0].max_rel < 5e-2, result.reports[0].line()
