"""Speech encoders: the T = (L - 80) // 320 frame rule, a tiny ONNX model with the official I/O names,
a tiny random transformers HuBERT, the seeded untrained encoder, and the factory."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ditto_research.audio.encoders import (
    HubertOnnxEncoder,
    HubertTorchEncoder,
    UntrainedEncoder,
    make_encoder,
    num_encodings,
)
from ditto_research.audio.features import offline_features
from ditto_research.errors import CheckpointError, ConfigError, InputError
from tests.helpers import max_abs_err

RECEPTIVE_FIELD = 400  # HuBERT's conv front end: 400 samples per row ...
HOP = 320  # ... every 320 samples


def _audio(num_samples: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(num_samples)).astype(np.float32)


def _conv_weight(feat_dim: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return (rng.standard_normal((feat_dim, 1, RECEPTIVE_FIELD)) / 20).astype(np.float32)


def _tiny_onnx(
    path: Path,
    feat_dim: int = 1024,
    input_name: str = "input_values",
    output_name: str = "encoding_out",
    length: int | str = "L",
) -> np.ndarray:
    """input (1, L) -> Conv(400, stride 320) -> tanh -> output (1, T, feat_dim); returns the conv weight."""
    weight = _conv_weight(feat_dim)
    nodes = [
        helper.make_node("Unsqueeze", [input_name, "axis1"], ["x3"]),
        helper.make_node("Conv", ["x3", "w"], ["conv"], strides=[HOP], kernel_shape=[RECEPTIVE_FIELD]),
        helper.make_node("Transpose", ["conv"], ["rows"], perm=[0, 2, 1]),
        helper.make_node("Tanh", ["rows"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_hubert",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, length])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, "T", feat_dim])],
        initializer=[
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return weight


def _conv_reference(chunk: np.ndarray, weight: np.ndarray) -> np.ndarray:
    rows = (chunk.shape[0] - RECEPTIVE_FIELD) // HOP + 1
    windows = np.stack([chunk[t * HOP : t * HOP + RECEPTIVE_FIELD] for t in range(rows)])
    return np.tanh(windows.astype(np.float64) @ weight[:, 0, :].T.astype(np.float64))


@pytest.mark.parametrize(
    ("length", "rows"), [(6480, 20), (400, 1), (399, 0), (80, 0), (12880, 40), (7000, 21)]
)
def test_frame_rule(length: int, rows: int) -> None:
    assert num_encodings(length) == rows
    assert UntrainedEncoder(seed=3).encode(_audio(length)).shape == (rows, 1024)


def test_untrained_is_seeded_and_bounded() -> None:
    chunk = _audio(6480)
    first, again = UntrainedEncoder(seed=1).encode(chunk), UntrainedEncoder(seed=1)(chunk)
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.float32 and np.abs(first).max() < 1
    assert not np.allclose(first, UntrainedEncoder(seed=2).encode(chunk))
    small = UntrainedEncoder(seed=1, feat_dim=16)
    assert small.feat_dim == 16 and small.encode(chunk).shape == (20, 16)


def test_untrained_matches_the_golden_stub(load_golden) -> None:
    golden = load_golden("wav2feat")
    encoder = UntrainedEncoder(seed=int(golden["stub_W_seed"]), feat_dim=golden["stub_W"].shape[1])
    np.testing.assert_array_equal(encoder.weight, golden["stub_W"])
    # float32 matmul in another summation order than the reference: measured 4.5e-7 (chunk), 3.1e-7
    # (features) on values in [-1, 1]; 2e-6 = 4.5x. The chunksize is in the key name (cs352 = (3, 5, 2)).
    prefixes = [key.removesuffix("_offline") for key in golden if re.fullmatch(r"cs\d{3}_offline", key)]
    assert prefixes, sorted(golden)
    for prefix in prefixes:
        chunksize = tuple(int(v) for v in prefix[2:])
        err = max_abs_err(encoder.encode(golden[f"{prefix}_chunk0"]), golden[f"{prefix}_chunk0_encoding"])
        assert err <= 2e-6, (prefix, err)
        err = max_abs_err(offline_features(golden["audio"], encoder, chunksize), golden[f"{prefix}_offline"])
        assert err <= 2e-6, (prefix, err)


def test_untrained_rejects_bad_chunks() -> None:
    with pytest.raises(InputError, match=r"\(L,\) float32"):
        UntrainedEncoder().encode(np.zeros((2, 6480), np.float32))
    assert UntrainedEncoder().encode(np.zeros((1, 6480), np.float32)).shape == (20, 1024)


def test_onnx_encoder_shapes_and_values(tmp_path: Path) -> None:
    weight = _tiny_onnx(tmp_path / "hubert.onnx")
    encoder = HubertOnnxEncoder(tmp_path / "hubert.onnx")
    assert encoder.feat_dim == 1024 and encoder.chunk_samples is None
    for length in (6480, 7000, 400):
        chunk = _audio(length, seed=length)
        out = encoder.encode(chunk)
        assert out.shape == (num_encodings(length), 1024) and out.dtype == np.float32
        assert max_abs_err(out, _conv_reference(chunk, weight)) < 1e-5
    assert encoder.encode(_audio(100)).shape == (0, 1024)
    features = offline_features(_audio(16000), encoder, (3, 5, 2))
    assert features.shape == (25, 1024)


def test_onnx_fixed_length_model(tmp_path: Path) -> None:
    _tiny_onnx(tmp_path / "fixed.onnx", feat_dim=8, length=6480)
    encoder = HubertOnnxEncoder(tmp_path / "fixed.onnx")
    assert encoder.chunk_samples == 6480 and encoder.feat_dim == 8
    assert encoder(_audio(6480)).shape == (20, 8)
    with pytest.raises(ConfigError, match="exactly 6480 samples"):
        encoder(_audio(7000))


@pytest.mark.parametrize(
    ("input_name", "output_name"), [("audio", "encoding_out"), ("input_values", "hidden")]
)
def test_onnx_wrong_io_names(tmp_path: Path, input_name: str, output_name: str) -> None:
    _tiny_onnx(tmp_path / "other.onnx", feat_dim=8, input_name=input_name, output_name=output_name)
    with pytest.raises(
        CheckpointError,
        match=r"other\.onnx is not the streaming HuBERT model.*"
        r"'input_values'.*'encoding_out'",
    ):
        HubertOnnxEncoder(tmp_path / "other.onnx")


def test_onnx_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not found: .*absent\.onnx"):
        HubertOnnxEncoder(tmp_path / "absent.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(CheckpointError, match=r"cannot load ONNX model .*broken\.onnx"):
        HubertOnnxEncoder(tmp_path / "broken.onnx")


def test_onnx_cuda_never_falls_back_to_cpu(tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the no-fallback check needs a CPU-only build")
    _tiny_onnx(tmp_path / "hubert.onnx", feat_dim=8)
    with pytest.raises(ConfigError, match="cannot run hubert.onnx on cuda"):
        HubertOnnxEncoder(tmp_path / "hubert.onnx", device="cuda")
    with pytest.raises(ConfigError, match="device='gpu' is not valid"):
        HubertOnnxEncoder(tmp_path / "hubert.onnx", device="gpu")


def _tiny_hubert(folder: Path, normalize: bool | None = None):
    transformers = pytest.importorskip("transformers")
    config = transformers.HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    model = transformers.HubertModel(config).eval()
    model.save_pretrained(str(folder))
    if normalize is not None:
        (folder / "preprocessor_config.json").write_text(f'{{"do_normalize": {str(normalize).lower()}}}')
    return model


def test_torch_encoder_matches_the_model(tmp_path: Path) -> None:
    import torch

    model = _tiny_hubert(tmp_path)
    encoder = HubertTorchEncoder(tmp_path)
    assert encoder.feat_dim == 32 and not encoder.normalize
    for length in (6480, 7000, 400):
        chunk = _audio(length, seed=length)
        out = encoder.encode(chunk)
        assert out.shape == (num_encodings(length), 32) and out.dtype == np.float32
        with torch.inference_mode():
            direct = model(input_values=torch.from_numpy(chunk)[None]).last_hidden_state[0].numpy()
        assert max_abs_err(out, direct) < 1e-5
    assert encoder.encode(_audio(300)).shape == (0, 32)


def test_torch_encoder_normalizes_when_the_folder_says_so(tmp_path: Path) -> None:
    _tiny_hubert(tmp_path, normalize=True)
    encoder = HubertTorchEncoder(tmp_path)
    assert encoder.normalize
    chunk = _audio(6480)
    np.testing.assert_allclose(encoder.encode(chunk), encoder.encode(3 * chunk + 0.5), atol=1e-4)


def test_torch_encoder_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(CheckpointError, match="no config.json"):
        HubertTorchEncoder(tmp_path)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the package were not installed
    with pytest.raises(ConfigError, match="pip install transformers"):
        HubertTorchEncoder(tmp_path)


def test_make_encoder(tmp_path: Path) -> None:
    untrained = make_encoder("untrained", seed=5)
    assert isinstance(untrained, UntrainedEncoder) and untrained.feat_dim == 1024
    np.testing.assert_array_equal(untrained.weight, UntrainedEncoder(seed=5).weight)
    _tiny_onnx(tmp_path / "hubert.onnx", feat_dim=8)
    assert isinstance(make_encoder("hubert_onnx", tmp_path / "hubert.onnx"), HubertOnnxEncoder)
    with pytest.raises(ConfigError, match="needs audio_encoder.path"):
        make_encoder("hubert_onnx", None)
    with pytest.raises(ConfigError, match="needs audio_encoder.path"):
        make_encoder("hubert_torch", None)
    with pytest.raises(ConfigError, match="hubert_onnx, hubert_torch, untrained"):
        make_encoder("wavlm", tmp_path)
