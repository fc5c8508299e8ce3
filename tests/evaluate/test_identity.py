"""CSIM: insightface's alignment from MediaPipe points, its input normalisation, cosine 1 on one face, and
one-line errors for files that are not an ArcFace ONNX (tiny random networks stand in for the weights)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import SimilarityTransform

from ditto_research.errors import InputError
from ditto_research.evaluate.metrics.identity import (
    ARCFACE_TEMPLATE,
    IdentityEmbedder,
    align_face,
    csim,
    five_points,
    frame_embeddings,
    similarity_transform,
)
from ditto_research.face.mediapipe_frontend import MediaPipeFrontend

EXPECTED = r"expected an ArcFace ONNX: input \(N, 3, 112, 112\), output \(N, 512\)"


class TinyEmbedder(torch.nn.Module):
    """(N, 3, side, side) -> (N, 512) with ``flatten``, or the (N, 8, side / 8, side / 8) feature map."""

    def __init__(self, side: int = 112, flatten: bool = True) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.fc = torch.nn.Linear(8 * (side // 8) ** 2, 512) if flatten else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x))
        return features if self.fc is None else self.fc(features.flatten(1))


def _export(net: torch.nn.Module, path: Path, side: int = 112) -> Path:
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, side, side),),
            str(path),
            input_names=["input"],
            output_names=["embedding"],
            dynamic_axes={"input": {0: "n"}, "embedding": {0: "n"}},
            dynamo=False,
        )
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyEmbedder, Path]:
    torch.manual_seed(0)
    net = TinyEmbedder().eval()
    return net, _export(net, tmp_path_factory.mktemp("arcface") / "tiny_arcface.onnx")


@pytest.fixture(scope="module")
def mesh() -> Iterator[MediaPipeFrontend]:
    frontend = MediaPipeFrontend()
    yield frontend
    frontend.close()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def test_similarity_transform_is_skimages_umeyama() -> None:
    rng = np.random.default_rng(0)
    angle, scale, shift = 0.3, 0.42, np.array([-20.0, 7.5])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = rng.uniform(100, 300, (5, 2))
    dst = scale * src @ rotation.T + shift
    exact = similarity_transform(src, dst)
    np.testing.assert_allclose(exact, np.hstack([scale * rotation, shift[:, None]]), atol=1e-9)
    noisy = dst + rng.normal(0, 2, dst.shape)
    reference = SimilarityTransform.from_estimate(src, noisy).params[:2]
    np.testing.assert_allclose(similarity_transform(src, noisy), reference, atol=1e-9)


def test_alignment_puts_the_astronauts_eyes_on_the_template(
    mesh: MediaPipeFrontend, astronaut: np.ndarray
) -> None:
    points = five_points(mesh.locate(astronaut))
    assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # image-left first
    crop, matrix = align_face(astronaut, points)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    landed = points @ matrix[:2, :2].T + matrix[:, 2]
    miss = np.linalg.norm(landed - ARCFACE_TEMPLATE, axis=1)
    # Measured: eyes 2.5 and 3.0 px off, nose and (smiling) mouth corners 5-7 px: a least-squares fit.
    assert miss[:2].max() < 4.0 and miss.max() < 9.0
    assert crop[40:90, 30:80].mean() > 120  # the middle of the crop is the (bright) face


def test_the_same_face_has_cosine_one(
    tiny: tuple[TinyEmbedder, Path], mesh: MediaPipeFrontend, astronaut: np.ndarray
) -> None:
    net, path = tiny
    embedder = IdentityEmbedder(path)
    assert (embedder.input_mean, embedder.input_std, embedder.dim) == (127.5, 127.5, 512)
    source = embedder.embed_face(astronaut, mesh.locate(astronaut))
    assert source.shape == (512,) and csim(source, source[None]) == pytest.approx(1.0, abs=1e-6)
    # insightface's input: the RGB crop as (x - 127.5) / 127.5, channels first.
    crop, _ = align_face(astronaut, five_points(mesh.locate(astronaut)))
    with torch.no_grad():
        expected = net((torch.from_numpy(crop).permute(2, 0, 1)[None].float() - 127.5) / 127.5)[0].numpy()
    np.testing.assert_allclose(source, expected, rtol=1e-4, atol=1e-4)
    wall = np.full_like(astronaut, 127)
    frames = [astronaut, wall, np.roll(astronaut, 12, axis=1), astronaut[:, ::-1]]
    rows = frame_embeddings(frames, embedder, frontend=mesh)
    assert rows.shape == (4, 512) and np.isnan(rows[1]).all() and np.isfinite(rows[[0, 2, 3]]).all()
    np.testing.assert_allclose(rows[0], source, rtol=1e-5, atol=1e-5)
    assert csim(source, rows[[0, 2]]) > 0.95  # a shifted face aligns back onto the same crop
    other = data.chelsea()  # a cat: no face, so its row is NaN and CSIM is undefined
    assert np.isnan(csim(source, frame_embeddings([other], embedder, frontend=mesh)))


def test_an_onnx_that_normalises_itself_gets_raw_pixels(tmp_path: Path) -> None:
    """insightface's rule: Sub and Mul among the first nodes (MXNet conversions) mean raw 0..255 input."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(1)
    weight = rng.standard_normal((3, 512)).astype(np.float32)
    nodes = [
        helper.make_node("Sub", ["data", "mean"], ["centred"], name="_minusscalar0"),
        helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="_mulscalar0"),
        helper.make_node("GlobalAveragePool", ["scaled"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "weight"], ["fc1"], name="fc1"),
    ]
    graph = helper.make_graph(
        nodes,
        "mxnet_like",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["n", 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["n", 512])],
        [
            helper.make_tensor("mean", TensorProto.FLOAT, [], [127.5]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [0.0078125]),
            helper.make_tensor("weight", TensorProto.FLOAT, [3, 512], weight.ravel()),
        ],
    )
    path = tmp_path / "mxnet_like.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    embedder = IdentityEmbedder(path)
    assert (embedder.input_mean, embedder.input_std) == (0.0, 1.0)
    crops = np.random.default_rng(2).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    expected = ((crops.mean((1, 2)) - 127.5) * 0.0078125) @ weight
    np.testing.assert_allclose(embedder.embed_crops(crops), expected, rtol=1e-4, atol=1e-4)


def _bad_file(kind: str, folder: Path) -> Path:
    if kind == "missing":
        return folder / "w600k_r50.onnx"
    if kind == "not onnx":
        path = folder / "notes.onnx"
        path.write_text("not a model\n")
        return path
    if kind == "wrong input":
        return _export(TinyEmbedder(side=64), folder / "input64.onnx", side=64)
    return _export(TinyEmbedder(flatten=False), folder / "feature_map.onnx")


@pytest.mark.parametrize("kind", ["missing", "not onnx", "wrong input", "not a vector"])
def test_files_that_are_not_an_arcface_onnx(kind: str, tmp_path: Path) -> None:
    path = _bad_file(kind, tmp_path)
    with pytest.raises(InputError, match=EXPECTED) as error:
        IdentityEmbedder(path)
    assert path.name in str(error.value) and "\n" not in str(error.value)


def test_csim_checks_shapes() -> None:
    with pytest.raises(InputError, match=r"csim needs a \(D,\) and a \(T, D\) embedding"):
        csim(np.ones(512), np.ones((3, 128)))
    assert csim(np.array([1.0, 0.0]), np.array([[0.0, 2.0], [3.0, 0.0]])) == pytest.approx(0.5)
