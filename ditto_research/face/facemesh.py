"""FaceMesh with iris (478 points) on one image, as MediaPipe's legacy ``FaceMesh(static_image_mode=True,
max_num_faces=1, refine_landmarks=True)`` solution computes it, on LiteRT.

The steps and their constants are the graph's:

1. **Detect** with short-range BlazeFace on the image letterboxed to a square (black bars, 128 x 128, range
   [-1, 1]); the best detection at or above ``min_detection``.
2. **Region of interest**: the detection box's centre; rotation from the right eye keypoint to the left eye
   keypoint (``angle = -atan2(-(y1 - y0), x1 - x0)``, so an upright face is 0); a square of 1.5 times the
   box's longer side.
3. **Mesh**: the ROI warped to 192 x 192 (bilinear, edges replicated, range [0, 1]); the network gives 468
   points (x, y, z in input pixels) and a face-presence logit (``sigmoid >= min_presence``, 0.5 as the graph).
4. **Iris**: per eye, a square of 2.3 times the eye-corner distance (33 -> 133 on the image-left eye,
   362 -> 263 on the image-right one, which is mirrored before the network, trained on one side, sees it),
   warped to 64 x 64; 71 eye-contour points replace those mesh points (the graph's
   :data:`EYE_CONTOUR_POINTS` table) and 5 iris points per eye become points 468-472 (image-left eye) and
   473-477.

Points are returned normalised like the legacy solution: x / width, y / height, z / width, with pixel
centres at half-integers (a point on the left edge of pixel 0 is x = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ditto_research.face.blazeface import SHORT_RANGE_SPEC, BlazeFace
from ditto_research.face.tflite_models import TfliteModel

__all__ = ["EYE_CONTOUR_POINTS", "FaceMeshLite", "Roi", "warp_roi"]

# The 71 eye-contour / halo / brow points of the iris network, as mesh indices: image-left eye, then the other
# (MediaPipe's UpdateFaceLandmarksCalculator table).
EYE_CONTOUR_POINTS: tuple[tuple[int, ...], tuple[int, ...]] = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173, 130, 25, 110, 24, 23, 22,
     26, 112, 243, 247, 30, 29, 27, 28, 56, 190, 226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224,
     223, 222, 221, 189, 35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245, 156, 70, 63,
     105, 66, 107, 55, 193),
    (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398, 359, 255, 339, 254,
     253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414, 446, 261, 448, 449, 450, 451, 452, 453, 464,
     342, 445, 444, 443, 442, 441, 413, 265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357,
     465, 383, 300, 293, 334, 296, 336, 285, 417),
)  # fmt: skip
_EYE_CORNERS = ((33, 133, False), (362, 263, True))  # (from, to, mirrored)
_MESH_POINTS = 468
_ROI_SCALE = 1.5
_IRIS_ROI_SCALE = 2.3


@dataclass(frozen=True)
class Roi:
    """A rotated square in image pixels (continuous coordinates: pixel i spans [i, i + 1))."""

    center: np.ndarray  # (2,) x, y
    side: float
    angle: float  # radians, counter-clockwise in image coordinates (y down)

    def to_image(self, points: np.ndarray, size: int) -> np.ndarray:
        """(N, 2) points in the warped input's pixels (0..size) -> image pixels."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        rel = (points / size - 0.5) * self.side
        return np.stack([c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1]], 1) + self.center


def warp_roi(rgb: np.ndarray, roi: Roi, size: int, border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """The ``size`` x ``size`` bilinear crop of ``roi`` (OpenCV samples pixel centres at integers)."""
    c, s = np.cos(roi.angle), np.sin(roi.angle)
    step = roi.side / size
    rotation = np.array([[c, -s], [s, c]])
    # Output pixel (u, v) (centre u + 0.5 in continuous terms) comes from image point
    # centre + R ((u + 0.5) * step - side / 2), i.e. OpenCV position that minus 0.5.
    offset = roi.center - 0.5 + rotation @ np.full(2, 0.5 * step - 0.5 * roi.side)
    matrix = np.concatenate([rotation * step, offset[:, None]], axis=1)
    return cv2.warpAffine(
        rgb, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border
    )


class FaceMeshLite:
    """``process(rgb, min_detection)`` -> [] or [(478, 3) float32 normalised points] (see the module)."""

    def __init__(
        self, detector: TfliteModel, mesh: TfliteModel, iris: TfliteModel, *, min_presence: float = 0.5
    ) -> None:
        self.detector = BlazeFace(detector, SHORT_RANGE_SPEC)
        self.mesh = mesh
        self.iris = iris
        self.min_presence = min_presence
        self._mesh_size = mesh.input_size[0]
        self._iris_size = iris.input_size[0]

    def process(self, rgb: np.ndarray, min_detection: float) -> list[np.ndarray]:
        roi = self.face_roi(rgb, min_detection)
        if roi is None:
            return []
        points = self.landmarks(rgb, roi)
        return [] if points is None else [points]

    def face_roi(self, rgb: np.ndarray, min_detection: float) -> Roi | None:
        """Steps 1-2: the mesh ROI of the best face, or None."""
        height, width = rgb.shape[:2]
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        square = cv2.copyMakeBorder(
            rgb, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=0
        )
        size = self.detector.spec.input_size
        tile = cv2.resize(
            square, (size, size), interpolation=cv2.INTER_LINEAR if side < 2 * size else cv2.INTER_AREA
        )
        found = self.detector.detect(tile[None], min_detection)[0]
        if not len(found):
            return None
        box = found.boxes[0] * side - np.array([left, top, left, top], np.float32)
        eyes = found.keypoints[0, :2] * side - np.array([left, top], np.float32)
        angle = -np.arctan2(-(eyes[1, 1] - eyes[0, 1]), eyes[1, 0] - eyes[0, 0])
        center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float64)
        return Roi(center, float(max(box[2] - box[0], box[3] - box[1])) * _ROI_SCALE, float(angle))

    def landmarks(self, rgb: np.ndarray, roi: Roi) -> np.ndarray | None:
        """Steps 3-4: (478, 3) normalised points of the face in ``roi``, or None when no face is there."""
        height, width = rgb.shape[:2]
        crop = warp_roi(rgb, roi, self._mesh_size).astype(np.float32) * np.float32(1 / 255)
        raw, flag = self.mesh(crop[None])
        if 1.0 / (1.0 + np.exp(-float(flag.ravel()[0]))) < self.min_presence:
            return None
        raw = raw.reshape(-1, 3)[:_MESH_POINTS].astype(np.float64)
        pixels = np.empty((_MESH_POINTS + 10, 3))
        pixels[:_MESH_POINTS, :2] = roi.to_image(raw[:, :2], self._mesh_size)
        pixels[:_MESH_POINTS, 2] = raw[:, 2] / self._mesh_size * roi.side
        self._refine_eyes(rgb, pixels)
        return (pixels / np.array([width, height, width])).astype(np.float32)

    def _refine_eyes(self, rgb: np.ndarray, pixels: np.ndarray) -> None:
        """Step 4 in place on (478, 3) pixel points whose first 468 rows are the mesh."""
        rois: list[Roi] = []
        crops: list[np.ndarray] = []
        for start, end, mirrored in _EYE_CORNERS:
            a, b = pixels[start, :2], pixels[end, :2]
            delta = b - a
            roi = Roi(
                (a + b) / 2, float(np.hypot(*delta)) * _IRIS_ROI_SCALE, float(np.arctan2(delta[1], delta[0]))
            )
            crop = warp_roi(rgb, roi, self._iris_size)
            crops.append(crop[:, ::-1] if mirrored else crop)
            rois.append(roi)
        contours, irises = self.iris(np.stack(crops).astype(np.float32) * np.float32(1 / 255))
        for eye, ((_, _, mirrored), roi) in enumerate(zip(_EYE_CORNERS, rois)):
            for raw, rows in (
                (contours[eye].reshape(-1, 3), list(EYE_CONTOUR_POINTS[eye])),
                (irises[eye].reshape(-1, 3), list(range(_MESH_POINTS + 5 * eye, _MESH_POINTS + 5 * eye + 5))),
            ):
                raw = raw.astype(np.float64)
                if mirrored:
                    raw[:, 0] = self._iris_size - raw[:, 0]
                pixels[rows, :2] = roi.to_image(raw[:, :2], self._iris_size)
                pixels[rows, 2] = raw[:, 2] / self._iris_size * roi.side
