"""python -m ditto_research.export.tensorrt: the parts that need no TensorRT (profiles, precisions, naming,
config)."""

from __future__ import annotations

import importlib.util

import pytest

from ditto_research.errors import ConfigError, ExportError
from ditto_research.export.config import TensorRTExportConfig
from ditto_research.export.tensorrt import (
    ShapeProfile,
    engine_graphs,
    engine_precision,
    is_fp32_layer,
    needs_decomposed_grid_sample,
    profile_shapes,
    run_build,
    version_tuple,
)


@pytest.mark.parametrize(
    "version, decomposed",
    [
        ("8.6.1", True),
        ("10.0.1", True),
        ("10.13.3.9", True),
        ("11.1.0", True),
        ("11.2.0", False),
        ("12.0", False),
    ],
)
def test_grid_sample_path_by_tensorrt_version(version, decomposed):
    assert needs_decomposed_grid_sample(version) is decomposed


def test_version_tuple():
    assert version_tuple("10.7.0.post1") == (10, 7, 0)


@pytest.mark.parametrize(
    "network, requested, expected",
    [
        ("decoder", "fp16", "fp16"),
        ("warp_network", "fp16", "fp16"),
        ("motion_extractor", "fp16", "fp32"),
        ("lmdm", "fp16", "fp32"),
        ("hubert", "fp16", "fp32"),
        ("stitch_network", "fp16", "fp32"),
        ("decoder", "fp32", "fp32"),
    ],
)
def test_engine_precision(network, requested, expected):
    assert engine_precision(network, requested) == expected


@pytest.mark.parametrize(
    "name, layer_type, pinned",
    [
        ("/module/dense_motion_network/grid_sample/GridSample", "LayerType.GRID_SAMPLE", True),
        ("/module/grid_sample/Mul_3", "LayerType.ELEMENTWISE", True),
        ("gs3d/grid_sample_decomposed/Gather_7", "LayerType.GATHER", True),
        ("/module/third/conv/Conv", "LayerType.CONVOLUTION", False),
        ("node_17", "LayerType.GRID_SAMPLE", True),
    ],
)
def test_fp32_layers(name, layer_type, pinned):
    assert is_fp32_layer(name, layer_type) is pinned


def test_profiles():
    assert profile_shapes("decoder", "feature", (1, 256, 64, 64)) is None
    assert profile_shapes("decoder", "feature", (-1, 256, 64, 64), max_batch=4) == ShapeProfile(
        "feature", (1, 256, 64, 64), (1, 256, 64, 64), (4, 256, 64, 64)
    )
    hubert = profile_shapes("hubert", "input_values", (1, -1), hubert_samples=(3240, 6480, 12960))
    assert hubert == ShapeProfile("input_values", (1, 3240), (1, 6480), (1, 12960))
    with pytest.raises(ExportError, match="dynamic axis 2"):
        profile_shapes("decoder", "feature", (1, 256, -1, 64))


def test_engine_graphs_pick_the_lmdm_files_present(tmp_path):
    def touch(*names: str) -> None:
        for name in names:
            (tmp_path / name).write_bytes(b"")

    pair = ["lmdm_v0.4_hubert_memory.onnx", "lmdm_v0.4_hubert_step.onnx"]
    touch("decoder.onnx", "lmdm_v0.4_hubert.onnx")
    assert engine_graphs(tmp_path, None) == ["decoder", "lmdm"]
    touch(*pair)
    assert engine_graphs(tmp_path, None) == ["decoder", "lmdm", "lmdm_memory", "lmdm_step"]
    assert engine_graphs(tmp_path, ["lmdm"]) == ["lmdm", "lmdm_memory", "lmdm_step"]
    (tmp_path / "lmdm_v0.4_hubert.onnx").unlink()
    assert engine_graphs(tmp_path, None) == ["decoder", "lmdm_memory", "lmdm_step"]  # the pair alone
    for name in pair:
        (tmp_path / name).unlink()
    assert engine_graphs(tmp_path, ["lmdm"]) == ["lmdm"]  # its build reports the missing file
    assert profile_shapes("lmdm_step", "t", (1,)) is None  # the step's time and weight are not batched
    assert profile_shapes("lmdm_step", "cond_keys", (-1, 8, 2, 8, 80, 64), max_batch=2).max == (
        2,
        8,
        2,
        8,
        80,
        64,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"precision": "int8"}, "fp32, fp16"),
        ({"max_batch": 0}, "max_batch"),
        ({"hubert_samples": [6480, 3240, 12960]}, "min <= opt <= max"),
        ({"networks": ["renderer"]}, "choose from"),
        ({"builder_optimization_level": 7}, "0..5"),
    ],
)
def test_bad_tensorrt_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TensorRTExportConfig(**kwargs)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_build_without_tensorrt_is_a_clear_error(tmp_path):
    with pytest.raises(
        ConfigError, match="python -m ditto_research.export.tensorrt is unavailable on this machine"
    ):
        run_build(TensorRTExportConfig(onnx_dir=str(tmp_path)), log=lambda _: None)
