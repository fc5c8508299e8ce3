"""python -m ditto_research.export.onnx: config, official names, metadata, verification, fp16 and dynamic
batch (model=tiny)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ditto_research.backends import RENDER_NETWORKS, example_inputs, get_io
from ditto_research.backends.onnx import graph_io, metadata
from ditto_research.errors import CheckpointError, ConfigError, ExportError
from ditto_research.export.config import ExportConfig, resolve_output_dir
from ditto_research.export.onnx import IOWrapper, build_network, export_module
from ditto_research.export.verify import compare_outputs, verify_export
from tests.export.tiny_exports import export_config
from tests.helpers import max_rel_err


@pytest.mark.parametrize("name", RENDER_NETWORKS)
def test_tiny_export_has_official_interface_and_matches_torch(tiny_onnx, name):
    folder = tiny_onnx([name])
    path = folder / get_io(name).onnx_file
    model = onnx.load(str(path))
    inputs, outputs = graph_io(model)
    io = get_io(name)
    assert [n for n, _ in inputs] == list(io.input_names)
    assert [n for n, _ in outputs] == list(io.output_names)
    assert io.mismatch(inputs, outputs) is None
    info = metadata(model)
    assert info["precision"] == "fp32" and info["model"] == "tiny" and info["opset"] == "20"
    # independent re-check (the export already verified): onnxruntime vs the torch module
    cfg = export_config(folder)
    reference = build_network(name, cfg.model, cfg.motion)
    report = verify_export(path, name, reference, example_inputs(name, reference, seed=7), 1e-4)
    assert report.passed and report.max_rel < 1e-4, report.line()


def test_warp_export_native_uses_standard_grid_sample(tiny_onnx):
    model = onnx.load(str(tiny_onnx(["warp_network"]) / "warp_network.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "GridSample" in ops and metadata(model)["grid_sample"] == "native"
    assert max(e.version for e in model.opset_import if e.domain in ("", "ai.onnx")) == 20


def test_warp_export_decomposed_fp16(tiny_onnx):
    folder = tiny_onnx(["warp_network"], ["grid_sample=decomposed", "precision=fp16"])
    model = onnx.load(str(folder / "warp_network.onnx"))
    assert "GridSample" not in {n.op_type for n in model.graph.node}
    assert metadata(model)["precision"] == "fp16" and metadata(model)["grid_sample"] == "decomposed"
    # float32 I/O; float16 weights inside
    assert all(
        v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        for v in [*model.graph.input, *model.graph.output]
    )
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    # the grid-sample scope computes in float32: no float16 casts feed its nodes
    casts_to_half = {
        n.output[0]
        for n in model.graph.node
        if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT16
    }
    gs_inputs = {
        i for n in model.graph.node if "grid_sample" in n.name and n.op_type != "Cast" for i in n.input
    }
    assert not gs_inputs & casts_to_half


def test_fp16_lmdm_stays_fp32(tiny_onnx):
    model = onnx.load(str(tiny_onnx(["lmdm"], ["precision=fp16"]) / "lmdm_v0.4_hubert.onnx"))
    assert metadata(model)["precision"] == "fp32"
    assert not any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)


@pytest.mark.parametrize("name", ["stitch_network", "lmdm", "decoder"])
def test_dynamic_batch_export_runs_batch_one_and_three(tiny_onnx, name):
    folder = tiny_onnx(["stitch_network", "lmdm", "decoder"], ["dynamic_batch=true"])
    cfg = export_config(folder)
    path = folder / get_io(name).onnx_file
    model = onnx.load(str(path))
    assert metadata(model)["dynamic_batch"] == "true"
    assert all(
        v.type.tensor_type.shape.dim[0].dim_param == "batch"
        for v in [*model.graph.input, *model.graph.output]
    )
    reference = build_network(name, cfg.model, cfg.motion)
    for batch in (1, 3):
        report = verify_export(
            path, name, reference, example_inputs(name, reference, batch=batch, seed=3), 1e-4
        )
        assert report.batch == batch and report.passed and report.max_rel < 1e-4, report.line()


def test_traced_nearest_upsampling_is_interpolate_bit_for_bit():
    """The decoder's export form of nearest x2 upsampling (expand + reshape) equals F.interpolate exactly."""
    from ditto_research.models.decoder import upsample_nearest

    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on reading sizes as Python ints
        traced = torch.jit.trace(lambda v: upsample_nearest(v, 2), (x,))
    graph_ops = {node.kind() for node in traced.graph.nodes()}
    assert "aten::expand" in graph_ops and not any("upsample" in op for op in graph_ops)
    expected = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
    assert torch.equal(traced(x), expected) and torch.equal(upsample_nearest(x, 2), expected)


def test_verification_failure_is_an_export_error(tiny_onnx):
    folder = tiny_onnx(["stitch_network"])
    cfg = export_config(folder)
    other = build_network("stitch_network", cfg.model.__class__(name="tiny", seed=99), cfg.motion)
    with pytest.raises(ExportError, match="failed verification"):
        verify_export(
            folder / "stitch_network.onnx",
            "stitch_network",
            other,
            example_inputs("stitch_network", other),
            1e-4,
        )


def test_export_writes_atomically_and_reports_exporter_errors(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    with pytest.raises(ExportError, match="exporting stitch_network .* failed: RuntimeError: boom"):
        export_module(
            IOWrapper(Broken()),
            "stitch_network",
            tmp_path / "stitch_network.onnx",
            example_inputs("stitch_network"),
        )
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_compare_outputs_metric():
    ref = [np.array([1.0, -4.0]), np.array([0.5])]
    ours = [np.array([1.0, -4.2]), np.array([0.5])]
    max_abs, max_rel, worst = compare_outputs(ours, ref, ["a", "b"])
    assert worst == "a" and max_abs == pytest.approx(0.2) and max_rel == pytest.approx(0.05)
    assert compare_outputs([np.zeros(3)], [np.zeros(2)], ["c"])[1] == float("inf")


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["opset=17"], "grid_sample=decomposed"),
        (["networks=[warp]"], "choose from"),
        (["precision=bf16"], "fp32, fp16"),
        (["grid_sample=nearest"], "native, decomposed"),
        (["networks=[hubert]"], "hubert_path"),
        (["opset=13", "grid_sample=decomposed"], "17..20"),
        (["lmdm_form=pair"], "guided_step, cached, both"),
    ],
)
def test_bad_export_options_are_config_errors(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        export_config(tmp_path, overrides)


def test_output_dir_defaults(tmp_path):
    cfg = export_config(tmp_path)
    assert resolve_output_dir(cfg) == tmp_path
    cfg.output_dir = None
    assert resolve_output_dir(cfg).name == "tiny_onnx"
    cfg.model.name = "ditto"
    assert resolve_output_dir(cfg) == Path(cfg.model.checkpoint_root) / "ditto_onnx"
    assert isinstance(cfg, ExportConfig) and cfg.verify_tolerance == 1e-4


def test_missing_checkpoints_fail_before_exporting(tmp_path):
    from ditto_research.export.onnx import run_export

    cfg = export_config(tmp_path / "out", ["model=ditto", f"model.checkpoint_root={tmp_path / 'nowhere'}"])
    with pytest.raises(CheckpointError, match="does not exist"):
        run_export(cfg, log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_hubert_export_from_a_transformers_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from ditto_research.backends.onnx import load_onnx_network
    from ditto_research.export.onnx import run_export

    config = transformers.HubertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    transformers.HubertModel(config).save_pretrained(str(tmp_path / "hubert"))
    cfg = export_config(tmp_path / "out", ["networks=[stitch_network]", f"hubert_path={tmp_path / 'hubert'}"])
    assert cfg.all_networks == ["stitch_network", "hubert"]
    results = run_export(cfg, log=lambda _: None)
    assert [r.name for r in results] == ["stitch_network", "hubert"] and results[1].reports[0].passed
    runner = load_onnx_network("hubert", tmp_path / "out")
    model = build_network("hubert", cfg.model, cfg.motion, hubert_path=str(tmp_path / "hubert"))
    for samples in (3240, 12960):  # any chunk length
        audio = torch.randn(1, samples, generator=torch.Generator().manual_seed(samples)) * 0.1
        assert max_rel_err(runner(audio), model(audio).numpy()) < 1e-4


def test_an_export_that_fails_half_way_adds_nothing(tmp_path, monkeypatch):
    """Files are staged and verified in a hidden folder and moved only when every network succeeded."""
    import ditto_research.export.onnx as onnx_export

    out = tmp_path / "onnx"
    out.mkdir()
    (out / "keep.txt").write_text("the user's file")
    real = onnx_export._export_one

    def fail_on_decoder(name, cfg, folder):
        if name == "decoder":
            raise ExportError("exporting decoder failed: simulated")
        return real(name, cfg, folder)

    monkeypatch.setattr(onnx_export, "_export_one", fail_on_decoder)
    with pytest.raises(ExportError, match="simulated"):
        onnx_export.run_export(export_config(out, ["networks=[stitch_network,decoder]"]), log=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # no stitch_network.onnx, no staging folder


def test_a_file_of_the_same_name_is_refused_before_exporting_unless_overwrite(tmp_path, monkeypatch):
    """The user's decoder.onnx (or an earlier export's) is not replaced silently: one line naming it and the
    option, before any network is built; overwrite=true replaces it."""
    import ditto_research.export.onnx as onnx_export

    out = tmp_path / "onnx"
    out.mkdir()
    (out / "decoder.onnx").write_text("the user's file")
    (out / "notes.txt").write_text("kept either way")
    real = onnx_export._export_one
    exported: list[str] = []

    def counting(name, cfg, folder):
        exported.append(name)
        return real(name, cfg, folder)

    monkeypatch.setattr(onnx_export, "_export_one", counting)
    networks = "networks=[stitch_network,decoder]"
    with pytest.raises(ExportError) as info:
        onnx_export.run_export(export_config(out, [networks, "verify=false"]), log=lambda _: None)
    assert str(info.value) == (
        f"output_dir={out} already holds decoder.onnx; pass overwrite=true to replace them or choose another "
        "output_dir"
    )
    assert exported == [] and sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "notes.txt"]
    assert (out / "decoder.onnx").read_text() == "the user's file"
    onnx_export.run_export(
        export_config(out, [networks, "verify=false", "overwrite=true"]), log=lambda _: None
    )
    assert exported == ["stitch_network", "decoder"] and onnx.load(str(out / "decoder.onnx")).graph.node
    assert (out / "notes.txt").read_text() == "kept either way"


def test_export_into_an_unusable_folder_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(
        ExportError, match=r"cannot write to output_dir=.*a_file/onnx .*choose a writable folder"
    ):
        from ditto_research.export.onnx import run_export

        run_export(export_config(blocker / "onnx", ["networks=[stitch_network]"]), log=lambda _: None)
