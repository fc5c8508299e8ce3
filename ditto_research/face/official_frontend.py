"""The official face models (``ditto_pytorch/aux_models``) through onnxruntime and MediaPipe Tasks.

Chain (reference ``Source2Info._crop`` with the "ori" modules of ``core/aux_models/modules``):

1. ``det_10g.onnx`` (SCRFD): the image is letterboxed into 512 x 512 (top-left, ``cv2.resize`` bilinear),
   fed as ``(x - 127.5) / 128`` with the channels reversed (the reference passes RGB to ``blobFromImage``
   with ``swapRB=True``), decoded at strides 8/16/32 with 2 anchors per cell, score >= 0.5, NMS at IoU 0.4
   (areas with the +1 pixel convention). The largest box wins.
2. ``2d106det.onnx``: a 192 x 192 similarity crop, scale ``192 / (1.5 max(w, h))`` around the box centre,
   fed as raw 0..255 values with the channels reversed; output ``(p + 1) * 96`` mapped back to the image.
3. ``landmark203.onnx``: a 224 crop of the 106 points (scale 1.5, vy -0.1, rotated), fed as RGB / 255;
   output 3 (203 x 2, in 0..1 of the crop) times 224 mapped back with ``M_c2o``. For video frames after the
   first, the previous 203 points replace steps 1-2 (tracking).
4. ``face_landmarker.task`` (IMAGE mode, one face) on the 512 crop: normalised (1, 478, 3) landmarks.

Each step's arithmetic follows the reference in float32 / float64 as it does (see the helpers' docstrings).
Unverified here (the real files are not available to this project's tests): the graphs' output order and
shapes are read as the reference reads them (det: scores, boxes, keypoints per stride, by position; the 203
model: its third output), the 224 / 192 input sizes are taken from the graphs when static, and the
end-to-end result has not been compared with the reference on real weights. The pure parts (SCRFD decode,
NMS, the affine transforms, the input blobs) are tested against OpenCV / scikit-image and by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ditto_research.checkpoints import FACE_FILES
from ditto_research.errors import CheckpointError
from ditto_research.face.chain import LandmarkChain
from ditto_research.face.crop import WarpBackend, transform_points, warp_affine
from ditto_research.face.frontend import check_rgb, no_face_error

__all__ = [
    "OfficialFrontend",
    "ScrfdSettings",
    "decode_scrfd",
    "det_blob",
    "detect_faces",
    "landmark106_blob",
    "landmark106_matrix",
    "landmark106_points",
    "landmark203_blob",
    "letterbox",
    "nms",
    "scrfd_anchor_centers",
]


# --------------------------------------------------------------------------------------------------------
# SCRFD (det_10g)


@dataclass(frozen=True)
class ScrfdSettings:
    """det_10g decoding constants of the reference ``RetinaFace`` module."""

    input_size: int = 512
    strides: tuple[int, ...] = (8, 16, 32)
    num_anchors: int = 2
    score_threshold: float = 0.5
    nms_threshold: float = 0.4


_DEFAULT_SCRFD = ScrfdSettings()


def scrfd_anchor_centers(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    """(height * width * num_anchors, 2) float32 anchor centres (x, y) in input pixels, row-major over the
    feature map with each cell's anchors adjacent."""
    ys, xs = np.mgrid[:height, :width]
    centers = (np.stack([xs, ys], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
    return np.repeat(centers, num_anchors, axis=0)


def decode_scrfd(
    outputs: list[np.ndarray], input_hw: tuple[int, int], settings: ScrfdSettings = _DEFAULT_SCRFD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (M, 4) x1 y1 x2 y2, scores (M, 1) and keypoints (M, 5, 2) of the anchors above the threshold,
    in input pixels, strides in order.

    ``outputs``: per stride the scores (K, 1), then the box distances (K, 4), then the keypoint offsets
    (K, 10), all in stride units (a leading batch axis of 1 is dropped).
    """
    count = len(settings.strides)
    if len(outputs) < 3 * count:
        raise CheckpointError(
            f"det_10g gave {len(outputs)} outputs, expected {3 * count} (scores, boxes, keypoints per stride)"
        )
    boxes, scores, keypoints = [], [], []
    for level, stride in enumerate(settings.strides):
        score = np.asarray(outputs[level]).reshape(-1, 1)
        dist = np.asarray(outputs[level + count]).reshape(-1, 4) * stride
        kps = np.asarray(outputs[level + 2 * count]).reshape(-1, 10) * stride
        height, width = input_hw[0] // stride, input_hw[1] // stride
        centers = scrfd_anchor_centers(height, width, stride, settings.num_anchors)
        keep = np.where(score >= settings.score_threshold)[0]
        x, y = centers[keep, 0:1], centers[keep, 1:2]
        boxes.append(
            np.concatenate(
                [x - dist[keep, 0:1], y - dist[keep, 1:2], x + dist[keep, 2:3], y + dist[keep, 3:4]], axis=1
            )
        )
        offsets = kps[keep].reshape(-1, 5, 2)
        keypoints.append(offsets + centers[keep][:, None, :])
        scores.append(score[keep])
    return np.vstack(boxes), np.vstack(scores), np.concatenate(keypoints)


def nms(dets: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS on (K, 5) x1, y1, x2, y2, score rows; box areas count the +1 border pixel (reference).

    Returns kept row indices, best score first; a box goes when its IoU with a kept one exceeds ``threshold``.
    """
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = inter_w * inter_h
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= threshold]
    return keep


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """(size, size, 3) uint8 with ``rgb`` resized (bilinear, aspect kept) into its top-left corner, and the
    resize factor."""
    height, width = rgb.shape[:2]
    if height / width > 1.0:
        new_h, new_w = size, int(size / (height / width))
    else:
        new_w, new_h = size, int(size * (height / width))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(rgb, (new_w, new_h))
    return canvas, new_h / height


def det_blob(image: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float32 ``(x - 127.5) / 128`` with channels reversed (``cv2.dnn.blobFromImage`` with
    ``swapRB=True``, bit for bit)."""
    planes = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)
    return ((planes - np.float32(127.5)) * np.float32(1 / 128))[None]


def detect_faces(
    outputs: list[np.ndarray],
    input_hw: tuple[int, int],
    det_scale: float,
    settings: ScrfdSettings = _DEFAULT_SCRFD,
) -> np.ndarray:
    """(F, 5) float32 x1, y1, x2, y2, score of the faces after NMS, in original pixels, best score first."""
    boxes, scores, _ = decode_scrfd(outputs, input_hw, settings)
    order = scores.ravel().argsort()[::-1]
    dets = np.hstack((boxes / det_scale, scores)).astype(np.float32, copy=False)[order]
    return dets[nms(dets, settings.nms_threshold)]


# --------------------------------------------------------------------------------------------------------
# 2d106det


def landmark106_matrix(box: np.ndarray, input_size: int = 192) -> np.ndarray:
    """(2, 3) float64 image -> 192 crop similarity around a face box (reference ``transform``, rotation 0).

    The scale and scaled centre are float32 as in the reference (NumPy 2 scalar rules); composing the
    scikit-image transforms is exact, leaving ``[[s, 0, 96 - cx s], [0, s, 96 - cy s]]`` in float64.
    """
    box = np.asarray(box, dtype=np.float32)
    width, height = box[2] - box[0], box[3] - box[1]
    center_x, center_y = (box[2] + box[0]) / np.float32(2), (box[3] + box[1]) / np.float32(2)
    scale = np.float32(input_size) / (max(width, height) * np.float32(1.5))
    half = input_size / 2
    return np.array(
        [
            [float(scale), 0.0, half - float(center_x * scale)],
            [0.0, float(scale), half - float(center_y * scale)],
        ]
    )


def landmark106_blob(crop: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float32 raw 0..255 values, channels reversed (``blobFromImage`` with ``swapRB``)."""
    return np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)[None]


def landmark203_blob(crop: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float32 RGB / 255 (the reference's ``astype(float32) / 255.``, a float32 division)."""
    return np.ascontiguousarray((crop.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1))[None]


def landmark106_points(prediction: np.ndarray, matrix: np.ndarray, input_size: int = 192) -> np.ndarray:
    """(106, 2) float32 image pixels from the raw 2d106det output (its last 106 x, y pairs, -1..1 of the
    crop)."""
    points = np.asarray(prediction, dtype=np.float32).reshape(-1, 2)[-106:] + np.float32(1)
    points = points * np.float32(input_size // 2)
    inverse = cv2.invertAffineTransform(matrix)
    return (points.astype(np.float64) @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# The front-end


def _session(path: Path, providers: tuple[str, ...]) -> Any:
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(str(path), providers=list(providers))
    except Exception as e:  # onnxruntime raises its own untyped errors for unreadable graphs
        raise CheckpointError(f"cannot load face model {path}: {e}; re-download the checkpoints") from e


def _static_size(session: Any, default: int) -> int:
    """Input height of ``session`` when it is a fixed int (else ``default``)."""
    shape = session.get_inputs()[0].shape
    return shape[2] if len(shape) == 4 and isinstance(shape[2], int) and shape[2] > 0 else default


class OfficialFrontend(LandmarkChain):
    """det_10g + 2d106det + landmark203 (onnxruntime) and face_landmarker.task (MediaPipe Tasks).

    The chain's logic (largest box, crops, tracking) is :class:`~ditto_research.face.chain.LandmarkChain`;
    this class answers its model calls. ``face_landmarker`` may be None (then :meth:`landmarks478` raises
    CheckpointError); the task file is loaded on the first :meth:`landmarks478` call. ``warp_backend`` is the
    crop warp of steps 2-3 ("exact" reproduces the reference's OpenCV bit for bit, "opencv" is faster).
    """

    def __init__(
        self,
        det: Path,
        landmark106: Path,
        landmark203: Path,
        face_landmarker: Path | None,
        *,
        min_face_size: int = 0,
        warp_backend: WarpBackend = "exact",
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        scrfd: ScrfdSettings = _DEFAULT_SCRFD,
        select: str | int = "largest",
        reject_unusable: bool = False,
    ) -> None:
        for path in (det, landmark106, landmark203, face_landmarker):
            if path is not None and not Path(path).is_file():
                raise CheckpointError(f"face model {path} not found: download the checkpoints")
        self.min_face_size = min_face_size
        self.warp_backend = warp_backend
        self.scrfd = scrfd
        self.select = select
        self.reject_unusable = reject_unusable
        self._det = _session(Path(det), providers)
        self._lmk106 = _session(Path(landmark106), providers)
        self._lmk203 = _session(Path(landmark203), providers)
        self._size106 = _static_size(self._lmk106, 192)
        self.size203 = _static_size(self._lmk203, 224)
        self._task_path = face_landmarker
        self._landmarker: Any = None

    @classmethod
    def from_dir(cls, aux_dir: Path, **kwargs: Any) -> OfficialFrontend:
        """The four files of :data:`~ditto_research.checkpoints.FACE_FILES` in ``aux_dir``."""
        det, lmk106, lmk203, task = (Path(aux_dir) / name for name in FACE_FILES)
        return cls(det, lmk106, lmk203, task, **kwargs)

    # ----------------------------------------------------------------------------------------------------

    def detect(self, rgb: np.ndarray, *, index: int = 0) -> np.ndarray:
        """(F, 5) float32 face boxes x1, y1, x2, y2, score in ``rgb`` pixels (step 1)."""
        image, det_scale = letterbox(rgb, self.scrfd.input_size)
        blob = det_blob(image)
        outputs = self._det.run(None, {self._det.get_inputs()[0].name: blob})
        return detect_faces(_scrfd_order(self._det, outputs), blob.shape[2:], det_scale, self.scrfd)

    def landmarks106(self, rgb: np.ndarray, box: np.ndarray, *, index: int = 0) -> np.ndarray:
        """(106, 2) float32 image pixels for a face box (step 2)."""
        matrix = landmark106_matrix(box, self._size106)
        crop = warp_affine(rgb, matrix, (self._size106, self._size106), backend=self.warp_backend)
        blob = landmark106_blob(crop)
        prediction = self._lmk106.run(None, {self._lmk106.get_inputs()[0].name: blob})[0][0]
        return landmark106_points(prediction, matrix, self._size106)

    def run_landmark203(self, crop224: np.ndarray, M_c2o: np.ndarray, *, index: int = 0) -> np.ndarray:
        """(203, 2) float32 image pixels from the 224 crop (step 3)."""
        outputs = self._lmk203.run(None, {self._lmk203.get_inputs()[0].name: landmark203_blob(crop224)})
        raw = _landmark203_output(self._lmk203, outputs)
        return transform_points(raw[0].reshape(-1, 2) * np.float32(self.size203), M_c2o)

    def landmarks478(
        self, crop_rgb: np.ndarray, *, what: str = "the face crop", index: int = 0
    ) -> np.ndarray:
        """(1, 478, 3) float32 normalised FaceLandmarker landmarks of the crop (step 4)."""
        import mediapipe as mp

        crop_rgb = check_rgb(crop_rgb, what)
        result = self._face_landmarker().detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=crop_rgb))
        if not result.face_landmarks:
            raise no_face_error(what)
        return np.array([[(p.x, p.y, p.z) for p in result.face_landmarks[0]]], dtype=np.float32)

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None
        self._det = self._lmk106 = self._lmk203 = None

    def _face_landmarker(self) -> Any:
        if self._landmarker is None:
            if self._task_path is None:
                raise CheckpointError("no face_landmarker.task given: download the checkpoints (aux_models)")
            from mediapipe.tasks.python import BaseOptions, vision

            # The reference also asks for blendshapes and transformation matrices; neither changes the
            # landmarks, so they are left off.
            options = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(self._task_path)),
                running_mode=vision.RunningMode.IMAGE,
                num_faces=1,
            )
            try:
                self._landmarker = vision.FaceLandmarker.create_from_options(options)
            except Exception as e:  # MediaPipe raises RuntimeError/ValueError for a bad task file
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise CheckpointError(
                    f"cannot load {self._task_path} ({first}); it is not MediaPipe's FaceLandmarker bundle: "
                    "download it again (python -m ditto_research.checkpoints download)"
                ) from e
        return self._landmarker


def _scrfd_order(session: Any, outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs in scores/boxes/kps x stride order: by name when the graph uses the TensorRT-export names
    (scores1..3, boxes1..3, kps1..3), else by position (det_10g, as the reference reads it)."""
    names = [o.name for o in session.get_outputs()]
    wanted = [f"{kind}{i}" for kind in ("scores", "boxes", "kps") for i in (1, 2, 3)]
    if sorted(names) == sorted(wanted):
        return [outputs[names.index(name)] for name in wanted]
    return list(outputs)


def _landmark203_output(session: Any, outputs: list[np.ndarray]) -> np.ndarray:
    """The (1, 406) landmark output: "landmarks" if named so, the only output, or the third (reference)."""
    names = [o.name for o in session.get_outputs()]
    if "landmarks" in names:
        return np.asarray(outputs[names.index("landmarks")])
    if len(outputs) == 1:
        return np.asarray(outputs[0])
    if len(outputs) < 3:
        raise CheckpointError(f"landmark203 model has {len(outputs)} outputs; expected the reference's 3")
    return np.asarray(outputs[2])
