"""Face front-ends: MediaPipe on real photos (scikit-image), the official chain's math and plumbing.

The official models cannot be tested with real weights here: the SCRFD decode, NMS, input blobs and affine
transforms are checked against OpenCV / scikit-image / hand-worked values, and the chain is run end to end
on tiny constant ONNX graphs with the official input and output layout.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from ditto_research.checkpoints import FACE_FILES
from ditto_research.errors import CheckpointError, ConfigError, InputError
from ditto_research.face.crop import (
    LANDMARKS_106,
    LANDMARKS_203,
    CropLandmarkGroups,
    crop_image,
    estimate_crop_rect,
)
from ditto_research.face.eye import eye_ball_move, eye_open
from ditto_research.face.factory import make_frontend
from ditto_research.face.frontend import FaceFrontend, FaceLandmarks, crop_face
from ditto_research.face.mediapipe_frontend import (
    FACEMESH_CROP_GROUPS,
    FACEMESH_CROP_POINTS,
    MediaPipeFrontend,
)
from ditto_research.face.official_frontend import (
    OfficialFrontend,
    ScrfdSettings,
    decode_scrfd,
    det_blob,
    detect_faces,
    landmark106_blob,
    landmark106_matrix,
    landmark106_points,
    landmark203_blob,
    letterbox,
    nms,
    scrfd_anchor_centers,
)


@pytest.fixture(scope="module")
def frontend() -> MediaPipeFrontend:
    fe = MediaPipeFrontend()
    yield fe
    fe.close()


def _head() -> np.ndarray:
    """Head and shoulders of the astronaut (face about 92 x 106 px)."""
    return np.ascontiguousarray(data.astronaut()[20:260, 110:340])


# --------------------------------------------------------------------------------------------------------
# MediaPipe front-end


def test_astronaut_crop_and_eyes(frontend: MediaPipeFrontend) -> None:
    img = data.astronaut()
    face = frontend.locate(img, what="astronaut.png")
    assert isinstance(frontend, FaceFrontend) and face.num_faces == 1
    assert face.points.shape == (len(FACEMESH_CROP_POINTS), 2) and face.points.dtype == np.float32
    x1, y1, x2, y2 = face.box
    assert 150 < x1 < x2 < 300 and 40 < y1 < y2 < 220 and 80 < face.size < 140  # the face, upper middle
    eye_a, eye_b = face.points[0:4].mean(0), face.points[4:8].mean(0)
    assert eye_a[0] < eye_b[0]  # eye A is the image-left one
    assert face.points[8:10, 1].min() > max(eye_a[1], eye_b[1])  # lip corners below the eyes

    crop = crop_face(img, face)
    assert crop.img_crop.shape == (512, 512, 3) and crop.img_crop.dtype == np.uint8
    corners = np.array([[x1, y1], [x2, y2]], dtype=np.float32) @ crop.M_o2c[:2, :2].T + crop.M_o2c[:2, 2]
    assert (corners > 50).all() and (corners < 462).all()  # the whole face box inside the crop, with margin
    width = corners[1, 0] - corners[0, 0]
    assert 0.3 * 512 < width < 0.6 * 512  # scale 2.3 around the landmarks: the face fills ~40-50%
    assert abs(np.degrees(np.arctan2(crop.M_o2c[1, 0], crop.M_o2c[0, 0]))) < 10  # upright face, small roll

    lmk478 = frontend.landmarks478(crop.img_crop)
    assert lmk478.shape == (1, 478, 3) and lmk478.dtype == np.float32
    assert (lmk478[..., :2] > 0).all() and (lmk478[..., :2] < 1).all()  # normalised like the reference
    opening, ball = eye_open(lmk478), eye_ball_move(lmk478)
    assert opening.shape == (1, 2) and ball.shape == (1, 6)
    assert np.isfinite(opening).all() and np.isfinite(ball).all() and (opening > 0.3).all()  # open eyes


def test_no_face_raises(frontend: MediaPipeFrontend) -> None:
    sky = np.full((360, 640, 3), 180, np.uint8)
    with pytest.raises(InputError, match="no face found in sky.png: use a frontal portrait"):
        frontend.locate(sky, what="sky.png")
    with pytest.raises(InputError, match="uint8 RGB"):
        frontend.locate(data.camera())


def test_two_faces_uses_largest(frontend: MediaPipeFrontend, caplog: pytest.LogCaptureFixture) -> None:
    head = _head()
    small = cv2.resize(head, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    h, w = head.shape[:2]
    canvas = np.zeros((h, small.shape[1] + w, 3), dtype=np.uint8)  # the smaller face first (on the left)
    canvas[(h - small.shape[0]) // 2 : (h - small.shape[0]) // 2 + small.shape[0], : small.shape[1]] = small
    canvas[:, small.shape[1] :] = head
    with caplog.at_level(logging.WARNING, logger="ditto_research.face.frontend"):
        face = frontend.locate(canvas, what="two.png")
    assert face.num_faces == 2
    assert face.box[0] > small.shape[1] and face.size > 90  # the big face on the right
    assert "2 faces found in two.png; using the largest" in caplog.text


def test_tiny_face_below_min_size() -> None:
    tiny = cv2.resize(_head(), None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((240, 230, 3), dtype=np.uint8)
    canvas[60 : 60 + tiny.shape[0], 60 : 60 + tiny.shape[1]] = tiny
    with MediaPipeFrontend(min_face_size=64) as fe:
        message = r"the face in tiny.png is 3\dx4\d pixels, smaller than min_face_size=64"
        with pytest.raises(InputError, match=message):
            fe.locate(canvas, what="tiny.png")
        fe.min_face_size = 32
        assert 35 < fe.locate(canvas).size < 50  # the same face passes a lower limit


def test_tracking_follows_the_face(frontend: MediaPipeFrontend) -> None:
    img = data.astronaut()
    first = frontend.locate(img)
    shifted = np.zeros_like(img)
    shifted[:, 20:] = img[:, :-20]
    face = first
    for frame in (shifted, shifted):
        face = frontend.locate(frame, face)
    assert face.num_faces == 1
    np.testing.assert_allclose(face.box[[0, 2]], first.box[[0, 2]] + 20, atol=4)


def test_facemesh_crop_points() -> None:
    assert len(set(FACEMESH_CROP_POINTS)) == len(FACEMESH_CROP_POINTS) == 127
    assert max(FACEMESH_CROP_POINTS) < 478 and FACEMESH_CROP_POINTS[:10] == (
        33,
        133,
        159,
        145,
        263,
        362,
        386,
        374,
        61,
        291,
    )
    assert FACEMESH_CROP_GROUPS.min_points <= len(FACEMESH_CROP_POINTS)
    assert 10 not in FACEMESH_CROP_POINTS and 152 in FACEMESH_CROP_POINTS  # no forehead, chin kept


def test_eye_order_does_not_change_the_crop() -> None:
    """Left/right convention: only the eyes' midpoint enters the crop, so swapping the groups is a no-op."""
    pts = np.random.default_rng(0).uniform(0, 200, (203, 2)).astype(np.float32)
    swapped = CropLandmarkGroups(LANDMARKS_203.right_eye, LANDMARKS_203.left_eye, LANDMARKS_203.mouth)
    a, b = estimate_crop_rect(pts, landmarks=LANDMARKS_203), estimate_crop_rect(pts, landmarks=swapped)
    assert a.angle == b.angle and a.size == b.size and np.array_equal(a.center, b.center)


def test_make_frontend_choice(tmp_path: Path) -> None:
    for aux in (None, tmp_path):
        with make_frontend("auto", aux, 0) as fe:
            assert isinstance(fe, MediaPipeFrontend)
    for name in FACE_FILES[:3]:
        (tmp_path / name).write_bytes(b"")
    assert isinstance(make_frontend("auto", tmp_path, 0), MediaPipeFrontend)  # one file still missing
    with pytest.raises(CheckpointError, match="needs face_landmarker.task"):
        make_frontend("official", tmp_path, 0)
    (tmp_path / FACE_FILES[3]).write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot load face model"):  # auto went for the official files
        make_frontend("auto", tmp_path, 0)
    with pytest.raises(ConfigError, match="expected one of"):
        make_frontend("dlib", None, 0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# Official chain: pure math


def test_scrfd_anchor_centers() -> None:
    centers = scrfd_anchor_centers(2, 3, 8, 2)
    expected = [
        [0, 0],
        [0, 0],
        [8, 0],
        [8, 0],
        [16, 0],
        [16, 0],
        [0, 8],
        [0, 8],
        [8, 8],
        [8, 8],
        [16, 8],
        [16, 8],
    ]
    np.testing.assert_array_equal(centers, expected)
    assert centers.dtype == np.float32


def _scrfd_outputs(size: int, faces: dict[tuple[int, int], tuple[float, list[float]]]) -> list[np.ndarray]:
    """Zero-score SCRFD outputs for a size x size input with ``faces[(stride, anchor)] = (score, ltrb)``."""
    settings = ScrfdSettings()
    rows = [(size // s) ** 2 * settings.num_anchors for s in settings.strides]
    scores = [np.full((n, 1), 0.1, np.float32) for n in rows]
    boxes = [np.zeros((n, 4), np.float32) for n in rows]
    kps = [np.zeros((n, 10), np.float32) for n in rows]
    for (stride, anchor), (score, ltrb) in faces.items():
        level = settings.strides.index(stride)
        scores[level][anchor] = score
        boxes[level][anchor] = ltrb
        kps[level][anchor] = np.arange(10) / 10
    return scores + boxes + kps


def test_decode_scrfd_and_threshold() -> None:
    # 64 x 64 input: stride 16 has a 4 x 4 map; cell (row 1, col 2) anchor 1 is row (1 * 4 + 2) * 2 + 1 = 13,
    # centred at (32, 16).
    outputs = _scrfd_outputs(
        64, {(16, 13): (0.9, [1, 2, 3, 4]), (8, 5): (0.5, [1, 1, 1, 1]), (32, 0): (0.49, [1, 1, 1, 1])}
    )
    boxes, scores, kps = decode_scrfd(outputs, (64, 64))
    assert scores.ravel().tolist() == pytest.approx([0.5, 0.9])  # 0.5 passes (>=), 0.49 does not
    np.testing.assert_array_equal(boxes[1], [32 - 16, 16 - 32, 32 + 48, 16 + 64])
    np.testing.assert_array_equal(boxes[0], [16 - 8, -8, 16 + 8, 8])  # stride 8, cell 2 of row 0
    expected_kps = np.array([32, 16]) + (np.arange(10) / 10).reshape(5, 2) * 16
    np.testing.assert_allclose(kps[1], expected_kps, rtol=1e-6)


def _iou_plus1(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two x1, y1, x2, y2 boxes counting the border pixel (the reference convention)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    area_a, area_b = ((a[2] - a[0] + 1) * (a[3] - a[1] + 1)), ((b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return w * h / (area_a + area_b - w * h)


def _nms_brute(dets: np.ndarray, threshold: float) -> list[int]:
    kept: list[int] = []
    for i in np.argsort(-dets[:, 4], kind="stable"):
        if all(_iou_plus1(dets[i], dets[j]) <= threshold for j in kept):
            kept.append(int(i))
    return kept


def test_nms() -> None:
    dets = np.array(
        [[0, 0, 9, 9, 0.9], [1, 1, 10, 10, 0.8], [20, 20, 29, 29, 0.7], [0, 0, 9, 9, 0.95]], dtype=np.float32
    )
    assert nms(dets, 0.4) == [3, 2]  # IoU(0, 1) = 81 / 119 > 0.4; row 0 duplicates row 3
    assert nms(dets, 0.7) == [3, 1, 2]  # 0.68 <= 0.7 keeps row 1
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (60, 2))
    scores = rng.permutation(60)[:, None] / 60
    rand = np.hstack([xy, xy + rng.uniform(5, 40, (60, 2)), scores]).astype(np.float32)
    assert nms(rand, 0.4) == _nms_brute(rand, 0.4)


def test_letterbox_and_detect_faces_scale() -> None:
    img = np.full((100, 200, 3), 200, np.uint8)
    canvas, det_scale = letterbox(img, 64)
    assert canvas.shape == (64, 64, 3) and det_scale == 0.32
    assert (canvas[:32] == 200).all() and (canvas[32:] == 0).all()  # top-left, zero padding below
    tall, tall_scale = letterbox(np.full((200, 100, 3), 7, np.uint8), 64)
    assert tall_scale == 0.32 and (tall[:, :32] == 7).all() and (tall[:, 32:] == 0).all()
    outputs = _scrfd_outputs(64, {(16, 13): (0.9, [1, 2, 3, 4]), (16, 12): (0.8, [1, 2, 3, 4.5])})
    dets = detect_faces(outputs, (64, 64), 0.5)
    assert dets.shape == (1, 5) and dets.dtype == np.float32  # the overlapping 0.8 box is suppressed
    np.testing.assert_allclose(dets[0], [32, -32, 160, 160, 0.9], rtol=1e-6)


def test_input_blobs_match_opencv() -> None:
    img = np.random.default_rng(2).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    ref_det = cv2.dnn.blobFromImage(img, 1.0 / 128.0, (40, 48), (127.5, 127.5, 127.5), swapRB=True)
    assert np.array_equal(det_blob(img), ref_det) and det_blob(img).flags.c_contiguous
    ref_106 = cv2.dnn.blobFromImage(img, 1.0, (40, 48), (0, 0, 0), swapRB=True)
    assert np.array_equal(landmark106_blob(img), ref_106)
    ref_203 = (img.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    assert np.array_equal(landmark203_blob(img), ref_203) and landmark203_blob(img).flags.c_contiguous


def test_landmark106_transform_round_trip() -> None:
    from skimage import transform as trans

    box = np.array([61.3, 40.7, 170.2, 181.9, 0.9], dtype=np.float32)
    matrix = landmark106_matrix(box)
    # The reference builds it from scikit-image similarity transforms (rotation 0), float32 scalars (NumPy 2).
    w, h = box[2] - box[0], box[3] - box[1]
    scale = np.float32(192) / (max(w, h) * np.float32(1.5))
    cx, cy = (box[2] + box[0]) / np.float32(2) * scale, (box[3] + box[1]) / np.float32(2) * scale
    t = (
        trans.SimilarityTransform(scale=scale)
        + trans.SimilarityTransform(translation=(-cx, -cy))
        + trans.SimilarityTransform(rotation=0.0)
        + trans.SimilarityTransform(translation=(96, 96))
    )
    np.testing.assert_array_equal(matrix, t.params[:2])
    pts = np.random.default_rng(3).uniform(50, 180, (106, 2)).astype(np.float32)
    crop_pts = pts.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    prediction = np.concatenate([np.zeros(4), (crop_pts / 96 - 1).ravel()]).astype(np.float32)  # 2 extra pts
    np.testing.assert_allclose(landmark106_points(prediction, matrix), pts, atol=2e-4)


# --------------------------------------------------------------------------------------------------------
# Official chain: plumbing on constant ONNX graphs


def _constant_model(path: Path, input_name: str, input_shape: list, outputs: dict[str, np.ndarray]) -> None:
    """An ONNX graph whose outputs are constants (plus 0 x the input mean, so the input is consumed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)]
    outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in outputs.items()]
    graph = helper.make_graph(nodes, "constant", inputs, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))


def _face_layout(n: int, groups: CropLandmarkGroups, center: float, half: float) -> np.ndarray:
    """(n, 2) points spread around ``center`` with eyes above the mouth for ``groups``."""
    pts = np.random.default_rng(n).uniform(center - half, center + half, (n, 2))
    pts[list(groups.left_eye)] = [center - half / 2, center - half / 3]
    pts[list(groups.right_eye)] = [center + half / 2, center - half / 3]
    pts[list(groups.mouth)] = [center, center + half / 2]
    return pts.astype(np.float32)


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[OfficialFrontend, np.ndarray, np.ndarray]:
    """The front-end on constant graphs, with the constant 106 and 203 outputs."""
    root = tmp_path_factory.mktemp("aux")
    # 256 x 256 image -> det input 512 (det_scale 2). Big face (60, 50)-(180, 190): stride 32 cell (7, 7)
    # anchor 0 = row 238, centre (224, 224). A smaller one at stride 8 row 0 (centre 0, 0).
    det = _scrfd_outputs(512, {(32, 238): (0.9, [3.25, 3.875, 4.25, 4.875]), (8, 0): (0.8, [0, 0, 5, 5])})
    names = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
    _constant_model(root / FACE_FILES[0], "input.1", [1, 3, "h", "w"], dict(zip(names, det, strict=True)))
    lmk106 = _face_layout(106, LANDMARKS_106, 0.0, 0.6).reshape(1, -1)
    _constant_model(root / FACE_FILES[1], "data", [1, 3, 192, 192], {"fc1": lmk106})
    lmk203 = _face_layout(203, LANDMARKS_203, 0.5, 0.3).reshape(1, -1)
    _constant_model(
        root / FACE_FILES[2],
        "input",
        [1, 3, 224, 224],
        {"out_a": np.zeros((1, 8)), "out_b": np.ones((1, 3)), "lmk": lmk203},
    )
    fe = OfficialFrontend(*(root / name for name in FACE_FILES[:3]), None, min_face_size=40)
    yield fe, lmk106[0], lmk203.reshape(-1, 2)
    fe.close()


def test_official_chain_plumbing(official: tuple[OfficialFrontend, np.ndarray, np.ndarray]) -> None:
    official, lmk106, lmk203 = official
    img = np.random.default_rng(4).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    face = official.locate(img)
    assert face.num_faces == 2 and face.groups == LANDMARKS_203 and face.points.shape == (203, 2)
    np.testing.assert_allclose(face.box, [60, 50, 180, 190], atol=1e-4)  # the larger face, in image pixels
    # The same chain by hand: 106 points from the box, the 224 crop they place, the 203 output mapped back.
    pts106 = landmark106_points(lmk106, landmark106_matrix(face.box))
    crop = crop_image(img, pts106, dsize=224, scale=1.5, vy_ratio=-0.1, landmarks=LANDMARKS_106)
    expected = lmk203 * np.float32(224)
    expected = expected @ crop.M_c2o[:2, :2].T + crop.M_c2o[:2, 2]
    np.testing.assert_allclose(face.points, expected, rtol=1e-6)

    tracked = official.locate(img, face)  # video frame: the previous 203 points place the crop
    assert tracked.num_faces == 1
    crop = crop_image(img, face.points, dsize=224, scale=1.5, vy_ratio=-0.1)
    expected = lmk203 * np.float32(224)
    np.testing.assert_allclose(tracked.points, expected @ crop.M_c2o[:2, :2].T + crop.M_c2o[:2, 2], rtol=1e-6)
    assert crop_face(img, tracked).img_crop.shape == (512, 512, 3)

    with pytest.raises(CheckpointError, match="face_landmarker.task"):
        official.landmarks478(np.zeros((512, 512, 3), np.uint8))
    official.min_face_size = 200
    with pytest.raises(InputError, match="is 120x140 pixels, smaller than min_face_size=200"):
        official.locate(img, what="face.png")
    official.min_face_size = 40
    assert isinstance(FaceLandmarks(face.points, face.groups, face.box, 1).size, float)


def test_the_factory_s_old_home_still_answers_with_a_deprecation_warning() -> None:
    from ditto_research.face import factory, frontend

    with pytest.warns(DeprecationWarning, match="moved to ditto_research.face.factory"):
        assert frontend.make_frontend is factory.make_frontend
    with pytest.raises(AttributeError):
        frontend.no_such_name  # noqa: B018


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip" * 10, b"\x00" * 4096])
def test_a_corrupt_face_landmarker_task_is_one_line(
    official: tuple[OfficialFrontend, np.ndarray, np.ndarray], tmp_path: Path, content: bytes
) -> None:
    """The official chain's face_landmarker.task goes through MediaPipe Tasks (the installed mediapipe); a
    file it cannot load is one CheckpointError naming it and how to get it again, not MediaPipe's dump."""
    fe = official[0]
    task = tmp_path / "face_landmarker.task"
    task.write_bytes(content)
    previous = fe._task_path
    fe._task_path = task
    try:
        with pytest.raises(CheckpointError) as caught:
            fe.landmarks478(np.zeros((512, 512, 3), np.uint8))
    finally:
        fe._task_path = previous
    message = str(caught.value)
    assert message.startswith(f"cannot load {task} (") and "\n" not in message
    assert "python -m ditto_research.checkpoints download" in message
