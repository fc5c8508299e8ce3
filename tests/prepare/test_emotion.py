"""Emotion rows for training clips: tiny ONNX stand-ins for HSEmotion enet_b2_8 (exported here), the class
re-ordering, the 5 fps sampling and interpolation against hand-computed rows, batching, and bad models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ditto_research.errors import InputError
from ditto_research.motion.conditions import EMOTION_LABELS
from ditto_research.prepare.emotion import (
    EmotionClassifier,
    EmotionTrack,
    face_box_crop,
    interpolate_emotion,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore:The feature will be removed"),
]

SIZE = 260  # enet_b2_8's input side
HSEMOTION_CLASSES = ("Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise")
HSEMOTION_TO_LABEL = {
    "Anger": "angry",
    "Contempt": "contempt",
    "Disgust": "disgust",
    "Fear": "fear",
    "Happiness": "happy",
    "Neutral": "neutral",
    "Sadness": "sad",
    "Surprise": "surprise",
}
FIXED_LOGITS = np.log(np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=np.float32))  # softmax = (1..8) / 36


class _ConvNet(torch.nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=4)
        self.fc = torch.nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class _FixedLogits(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("logits", torch.from_numpy(FIXED_LOGITS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1, 0, 0] * 0 + self.logits


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    torch.onnx.export(
        module.eval(),
        (example,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("emotion_models")
    torch.manual_seed(0)
    image = torch.zeros(1, 3, SIZE, SIZE)
    (root / "notes.onnx").write_text("not a model")
    return {
        "random": _export(_ConvNet(8), image, root / "random.onnx"),
        "fixed": _export(_FixedLogits(), image, root / "fixed.onnx"),
        "seven": _export(_ConvNet(7), image, root / "seven.onnx"),
        "flat": _export(torch.nn.Linear(12, 8), torch.zeros(1, 12), root / "flat.onnx"),
        "text": root / "notes.onnx",
        "missing": root / "absent.onnx",
    }


def _faces(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(40, 200, size=(count, 2))
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]


def test_probabilities_are_rows_that_sum_to_one(models: dict[str, Path]) -> None:
    classifier = EmotionClassifier(models["random"])
    probabilities = classifier.probabilities(_faces(5))
    assert probabilities.shape == (5, 8) and probabilities.dtype == np.float32
    assert (probabilities > 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert np.ptp(probabilities, axis=0).max() > 0  # the rows depend on the image


def test_classes_land_where_ditto_expects_them(models: dict[str, Path]) -> None:
    probabilities = EmotionClassifier(models["fixed"]).probabilities(_faces(2))
    expected = np.exp(FIXED_LOGITS) / np.exp(FIXED_LOGITS).sum()
    for hse_index, name in enumerate(HSEMOTION_CLASSES):
        column = EMOTION_LABELS.index(HSEMOTION_TO_LABEL[name])
        np.testing.assert_allclose(probabilities[:, column], expected[hse_index], rtol=1e-6)


def test_preprocessing_is_rgb_imagenet_normalised_at_the_model_size(models: dict[str, Path]) -> None:
    classifier = EmotionClassifier(models["random"])
    face = np.empty((90, 70, 3), dtype=np.uint8)
    face[..., 0], face[..., 1], face[..., 2] = 200, 100, 0
    blob = classifier.preprocess([face])
    assert classifier.input_size == SIZE and blob.shape == (1, 3, SIZE, SIZE)
    expected = (np.array([200, 100, 0]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(
        blob[0].reshape(3, -1), np.repeat(expected[:, None], SIZE * SIZE, 1), atol=1e-6
    )


def test_a_batch_equals_one_by_one(models: dict[str, Path]) -> None:
    classifier = EmotionClassifier(models["random"])
    faces = _faces(6, seed=1)
    single = np.concatenate([classifier.probabilities([face]) for face in faces])
    np.testing.assert_allclose(classifier.probabilities(faces), single, rtol=1e-6, atol=1e-7)

    frames = _faces(23, seed=2)
    rows = [EmotionTrack(classifier, batch_size=b) for b in (1, 4)]
    for track in rows:
        for index, face in enumerate(frames):
            track.add(index, face)
    np.testing.assert_allclose(rows[0].finish(23), rows[1].finish(23), rtol=1e-6, atol=1e-7)


# n = 13 at 25 fps: frames 0, 5, 10 are sampled; hand-computed weights of rows a (0), b (5), c (10).
WEIGHTS_ALL_FOUND = [
    [1.0, 0.0, 0.0],
    [0.8, 0.2, 0.0],
    [0.6, 0.4, 0.0],
    [0.4, 0.6, 0.0],
    [0.2, 0.8, 0.0],
    [0.0, 1.0, 0.0],
    [0.0, 0.8, 0.2],
    [0.0, 0.6, 0.4],
    [0.0, 0.4, 0.6],
    [0.0, 0.2, 0.8],
    [0.0, 0.0, 1.0],
    [0.0, 0.0, 1.0],  # after the last sample: a copy
    [0.0, 0.0, 1.0],
]
# no face at frame 5: 0..10 interpolate a -> c over ten frames
WEIGHTS_NO_FACE_AT_5 = [[1 - i / 10, 0.0, i / 10] for i in range(11)] + [[0.0, 0.0, 1.0]] * 2
# no face at frame 0: frames 0..4 copy b
WEIGHTS_NO_FACE_AT_0 = [[0.0, 1.0, 0.0]] * 5 + WEIGHTS_ALL_FOUND[5:]


class _Recorder:
    """A classifier that returns, for each face, the probabilities stored in its first pixel's class."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.batches: list[int] = []

    def __call__(self, faces: list[np.ndarray]) -> np.ndarray:
        self.batches.append(len(faces))
        return self.rows[[int(face[0, 0, 0]) for face in faces]]


@pytest.mark.parametrize(
    ("no_face", "weights"),
    [(None, WEIGHTS_ALL_FOUND), (5, WEIGHTS_NO_FACE_AT_5), (0, WEIGHTS_NO_FACE_AT_0)],
)
def test_sampling_and_interpolation_match_hand_computed_rows(no_face: int | None, weights: list) -> None:
    abc = np.random.default_rng(3).dirichlet(np.ones(8), size=3).astype(np.float32)
    recorder = _Recorder(abc)
    track = EmotionTrack(recorder, batch_size=2)
    for index in range(13):
        face = np.full((4, 4, 3), index // 5, dtype=np.uint8)  # frames 0, 5, 10 carry rows a, b, c
        track.add(index, None if index == no_face else face)
    rows = track.finish(13)
    assert sum(recorder.batches) == (2 if no_face is not None else 3) and max(recorder.batches) <= 2
    np.testing.assert_allclose(rows, np.array(weights) @ abc, atol=1e-6)
    sampled = [i for i in (0, 5, 10) if i != no_face]
    np.testing.assert_array_equal(rows[sampled], abc[[i // 5 for i in sampled]])  # kept rows exactly
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-6)


def test_interpolation_rounds_weights_to_float32_like_the_reference() -> None:
    a, b = np.float32([0.1] * 8), np.float32([0.7] * 8)
    rows = interpolate_emotion(5, {0: a, 3: b})
    t = 2 / 3  # frame 2
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows[2], a * (1 - t) + b * t)  # float32 rows times Python floats
    np.testing.assert_array_equal(rows[4], b)


def test_too_few_faces_leave_the_video_out() -> None:
    track = EmotionTrack(_Recorder(np.eye(8, dtype=np.float32)), what="clip.mp4")
    for index in range(13):
        track.add(index, np.zeros((4, 4, 3), np.uint8) if index == 0 else None)
    with pytest.raises(InputError, match="clip.mp4") as caught:
        track.finish(13)  # 1 face * 5 < 0.6 * 13
    assert "\n" not in str(caught.value)


def test_face_box_crop_truncates_like_astype_int() -> None:
    image = np.arange(100 * 100 * 3, dtype=np.uint32).reshape(100, 100, 3).astype(np.uint8)
    np.testing.assert_array_equal(face_box_crop(image, [10.7, 20.2, 50.9, 60.999]), image[20:60, 10:50])
    assert face_box_crop(image, [30.0, 30.0, 30.5, 60.0]) is None  # empty: the reference drops the frame


@pytest.mark.parametrize("name", ["missing", "text", "seven", "flat"])
def test_bad_models_are_one_line_input_errors(models: dict[str, Path], name: str) -> None:
    with pytest.raises(InputError) as caught:
        EmotionClassifier(models[name])
    message = str(caught.value)
    assert str(models[name]) in message and "enet_b2_8" in message and "\n" not in message
