"""python -m ditto_research.export.onnx lmdm_form=cached|both: the LMDM as its cached pair (model=tiny).

Stated tolerance: onnxruntime vs torch within 1e-4 of max |torch| (what every fp32 export is verified to);
measured on the tiny LMDM about 1e-6.
"""

from __future__ import annotations

import onnx
import pytest
import torch

from ditto_research.backends import get_io
from ditto_research.backends.base import LMDM_PAIR_IO
from ditto_research.backends.lmdm_pair import CachedStepGraph, ConditionMemoryGraph, pair_example_inputs
from ditto_research.backends.onnx import graph_io, metadata
from ditto_research.errors import ExportError
from ditto_research.export.onnx import build_network, run_export
from ditto_research.export.verify import verify_export
from tests.export.tiny_exports import export_config

TOLERANCE = 1e-4
# Scopes of the condition encoder (and of what only it uses): none of them may appear in the step graph.
CONDITION_SCOPES = ("cond_encoder", "cond_projection", "non_attn_cond_projection", "null_cond")


def _tiny_lmdm(folder):
    cfg = export_config(folder)
    return build_network("lmdm", cfg.model, cfg.motion)


def test_both_writes_the_official_file_and_the_pair(tiny_onnx):
    folder = tiny_onnx(["lmdm"], ["lmdm_form=both"])
    assert (folder / get_io("lmdm").onnx_file).is_file()
    for name, io in LMDM_PAIR_IO.items():
        assert io.onnx_file == f"lmdm_v0.4_hubert_{name.split('_')[1]}.onnx"
        model = onnx.load(str(folder / io.onnx_file))
        assert io.mismatch(*graph_io(model)) is None
        info = metadata(model)
        assert (
            info["lmdm_form"] == "cached" and info["precision"] == "fp32" and info["guidance_weight"] == "2.0"
        )


def test_step_graph_holds_no_condition_encoder(tiny_onnx):
    folder = tiny_onnx(["lmdm"], ["lmdm_form=both"])
    official = onnx.load(str(folder / get_io("lmdm").onnx_file))
    step = onnx.load(str(folder / LMDM_PAIR_IO["lmdm_step"].onnx_file))
    memory = onnx.load(str(folder / LMDM_PAIR_IO["lmdm_memory"].onnx_file))

    def encoder_nodes(model: onnx.ModelProto) -> list[str]:
        return [n.name for n in model.graph.node if any(scope in n.name for scope in CONDITION_SCOPES)]

    def matmuls(model: onnx.ModelProto) -> int:
        return sum(n.op_type in ("MatMul", "Gemm") for n in model.graph.node)

    assert encoder_nodes(official) and encoder_nodes(memory)  # the scopes are there to be found
    assert encoder_nodes(step) == []
    assert "cond" not in [name for name, _ in graph_io(step)[0]]
    assert matmuls(step) < matmuls(official)


@pytest.mark.parametrize("graph", list(LMDM_PAIR_IO))
def test_each_graph_matches_its_torch_module(tiny_onnx, graph):
    folder = tiny_onnx(["lmdm"], ["lmdm_form=both"])
    lmdm = _tiny_lmdm(folder)
    module = ConditionMemoryGraph(lmdm) if graph == "lmdm_memory" else CachedStepGraph(lmdm)
    for weight in (2.0, 1.0, 4.5):  # the weight is an input of the step, not a constant
        inputs = pair_example_inputs(graph, lmdm, seed=21, guidance_weight=weight)
        report = verify_export(folder / LMDM_PAIR_IO[graph].onnx_file, graph, module, inputs, TOLERANCE)
        assert report.passed and report.max_rel < TOLERANCE, report.line()


def test_step_module_is_the_torch_guided_denoiser(tiny_onnx):
    """The traced torch modules compute what LMDM.guided_denoiser computes (any float time)."""
    lmdm = _tiny_lmdm(tiny_onnx(["lmdm"], ["lmdm_form=both"]))
    x, _, cond_frame, *_ = pair_example_inputs("lmdm_step", lmdm, seed=2)
    (cond,) = pair_example_inputs("lmdm_memory", lmdm, seed=3)
    with torch.no_grad():
        memory = ConditionMemoryGraph(lmdm)(cond)
        for t in (999.0, 412.5, 0.0):
            ours = CachedStepGraph(lmdm)(x, torch.tensor([t]), cond_frame, *memory, torch.tensor([2.0]))
            ref = lmdm.guided_denoiser(cond_frame, cond, 2.0)(x, torch.tensor([t]))
            assert (ours - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_dynamic_batch_pair_runs_batch_three(tiny_onnx):
    folder = tiny_onnx(["lmdm"], ["dynamic_batch=true", "lmdm_form=cached"])
    assert not (folder / get_io("lmdm").onnx_file).exists()  # cached: the pair only
    lmdm = _tiny_lmdm(folder)
    for graph, module in (("lmdm_memory", ConditionMemoryGraph(lmdm)), ("lmdm_step", CachedStepGraph(lmdm))):
        path = folder / LMDM_PAIR_IO[graph].onnx_file
        assert metadata(onnx.load(str(path)))["dynamic_batch"] == "true"
        report = verify_export(
            path, graph, module, pair_example_inputs(graph, lmdm, batch=3, seed=5), TOLERANCE
        )
        assert report.batch == 3 and report.passed, report.line()


def test_guided_step_export_removes_a_stale_pair(tmp_path):
    run_export(
        export_config(tmp_path, ["networks=[lmdm]", "lmdm_form=cached", "verify=false"]), log=lambda _: None
    )
    assert all((tmp_path / io.onnx_file).is_file() for io in LMDM_PAIR_IO.values())
    with pytest.raises(
        ExportError, match="already holds lmdm_v0.4_hubert_memory.onnx, lmdm_v0.4_hubert_step"
    ):
        run_export(export_config(tmp_path, ["networks=[lmdm]", "verify=false"]), log=lambda _: None)
    lines: list[str] = []
    overwrite = ["networks=[lmdm]", "verify=false", "overwrite=true"]
    results = run_export(export_config(tmp_path, overwrite), log=lines.append)
    assert [r.name for r in results] == ["lmdm"]
    assert not any((tmp_path / io.onnx_file).exists() for io in LMDM_PAIR_IO.values())
    assert any(line.startswith("removed") for line in lines)
