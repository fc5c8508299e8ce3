"""The decomposed 5-D grid sample equals the native op: in torch, exported to ONNX, and as a graph rewrite."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from ditto_research.backends.onnx import make_session, rewrite_grid_samples
from ditto_research.errors import CheckpointError, ConfigError
from ditto_research.export.grid_sample import (
    DecomposedGridSample3d,
    grid_sample_3d_decomposed,
    make_grid_sample,
)


def _native(volume: torch.Tensor, grid: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)


def _case(seed: int, volume_shape: tuple[int, ...], grid_shape: tuple[int, ...], spread: float = 1.4):
    gen = torch.Generator().manual_seed(seed)
    volume = torch.randn(volume_shape, generator=gen)
    grid = (torch.rand(grid_shape, generator=gen) * 2 - 1) * spread  # about 30% of the points out of range
    return volume, grid


CASES = [
    ((1, 3, 4, 5, 6), (1, 3, 7, 5, 3)),
    ((2, 4, 3, 8, 8), (2, 5, 4, 6, 3)),
    ((1, 8, 6, 16, 16), (1, 12, 16, 16, 3)),  # more grid depth than volume depth, like the dense motion call
]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("volume_shape, grid_shape", CASES)
def test_torch_decomposition_equals_native(volume_shape, grid_shape, align_corners):
    volume, grid = _case(0, volume_shape, grid_shape)
    ours = grid_sample_3d_decomposed(volume, grid, align_corners)
    ref = _native(volume, grid, align_corners)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, rtol=0, atol=1e-6), float((ours - ref).abs().max())


def test_decomposition_handles_far_out_of_range_and_edge_points():
    volume, _ = _case(1, (1, 2, 4, 4, 4), (1, 1, 1, 1, 3))
    points = torch.tensor(
        [
            [-1.0, -1.0, -1.0],
            [1.0, 1.0, 1.0],
            [1.24, 0.0, 0.0],
            [-1.26, 0.3, 0.2],
            [50.0, -80.0, 3.0],
            [0.99, -0.99, 0.5],
            [1e6, 1e6, -1e6],
            [0.0, 0.0, 0.0],
        ]
    )
    grid = points.view(1, 1, 2, 4, 3)
    ours, ref = grid_sample_3d_decomposed(volume, grid), _native(volume, grid)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-6)
    assert float(ours[..., 1, 0].abs().max()) == 0.0  # fully outside: exactly zero


def test_make_grid_sample_modes():
    volume, grid = _case(2, (1, 2, 3, 4, 4), (1, 2, 4, 4, 3))
    assert torch.equal(make_grid_sample("native")(volume, grid), _native(volume, grid))
    assert isinstance(make_grid_sample("decomposed"), DecomposedGridSample3d)
    with pytest.raises(ConfigError, match="native, decomposed"):
        make_grid_sample("bilinear")


def _export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, opset: int) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["volume", "grid"],
            output_names=["out"],
            dynamic_axes={"volume": {0: "n"}, "grid": {0: "n"}, "out": {0: "n"}},
        )
    return path


@pytest.mark.parametrize("opset", [17, 20])
def test_exported_decomposition_has_no_grid_sample_and_matches_native(tmp_path, opset):
    volume, grid = _case(3, (2, 4, 4, 8, 8), (2, 6, 8, 8, 3))
    path = _export(DecomposedGridSample3d(), (volume, grid), tmp_path / "gs.onnx", opset)
    model = onnx.load(str(path))
    assert not [n for n in model.graph.node if "GridSample" in n.op_type]
    out = make_session(path).run(None, {"volume": volume.numpy(), "grid": grid.numpy()})[0]
    np.testing.assert_allclose(out, _native(volume, grid).numpy(), rtol=0, atol=1e-5)


def _plugin_model(opset: int, **attrs: int) -> onnx.ModelProto:
    """volume, grid -> GridSample3D (the TensorRT plugin op of the official warp_network.onnx) -> out."""
    node = helper.make_node(
        "GridSample3D",
        ["volume", "grid"],
        ["out"],
        name="gs3d",
        **{"interpolation_mode": 0, "padding_mode": 0, "align_corners": 0, **attrs},
    )
    graph = helper.make_graph(
        [node],
        "plugin",
        [
            helper.make_tensor_value_info("volume", TensorProto.FLOAT, ["n", 4, 5, 6, 7]),
            helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["n", 3, 6, 7, 3]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 4, 3, 6, 7])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    "opset, target, expected_op",
    [(20, "native", "GridSample"), (17, "native", "Gather"), (20, "decomposed", "Gather")],
)
@pytest.mark.parametrize("align_corners", [0, 1])
def test_plugin_node_rewrite_runs_on_onnxruntime(opset, target, expected_op, align_corners):
    model = _plugin_model(opset, align_corners=align_corners)
    assert rewrite_grid_samples(model, target) == 1
    ops = {n.op_type for n in model.graph.node}
    assert "GridSample3D" not in ops and expected_op in ops
    if expected_op == "Gather":
        assert "GridSample" not in ops
    volume, grid = _case(4, (2, 4, 5, 6, 7), (2, 3, 6, 7, 3))
    out = make_session(model).run(None, {"volume": volume.numpy(), "grid": grid.numpy()})[0]
    np.testing.assert_allclose(out, _native(volume, grid, bool(align_corners)).numpy(), rtol=0, atol=1e-5)


def test_native_5d_grid_sample_is_decomposed_on_request(tmp_path):
    volume, grid = _case(5, (1, 3, 4, 6, 6), (1, 2, 6, 6, 3))
    model = onnx.load(str(_export(make_grid_sample("native"), (volume, grid), tmp_path / "native.onnx", 20)))
    assert rewrite_grid_samples(model, "native") == 0  # already runnable
    assert rewrite_grid_samples(model, "decomposed") == 1
    assert "GridSample" not in {n.op_type for n in model.graph.node}
    out = make_session(model).run(None, {"volume": volume.numpy(), "grid": grid.numpy()})[0]
    np.testing.assert_allclose(out, _native(volume, grid).numpy(), rtol=0, atol=1e-5)


def test_unsupported_plugin_modes_are_refused():
    model = _plugin_model(17, padding_mode=1)
    with pytest.raises(CheckpointError, match="zero padding"):
        rewrite_grid_samples(model, "native")
