"""Find faces of any size anywhere in a frame with the detectors inside the mediapipe wheel.

FaceMesh alone looks at the whole frame at 128 x 128 (its short-range detector), so a face must fill a large
part of the image: a 260-pixel face in a 1920x1080 frame is not found. The original detects first (det_10g on
the whole image), then runs its landmark models on a crop around the chosen face. This module is that first
stage for the MediaPipe front-end:

1. **Candidates**: MediaPipe's full-range BlazeFace (``model_selection=1``, a 192 x 192 input that finds faces
   of about 15 % of its input side and up) on the whole image with a margin of half its size (for a face
   that fills the image), then on square tiles of a pyramid: tile side S = the image's shorter side, then
   halved while 0.15 S is above the smallest face asked for; tiles overlap by 30 % of S, so every face that
   level is meant for (up to 0.3 S, larger ones belong to the coarser level) lies whole in a tile. Each tile
   is resized to 192 pixels before the detector sees it.
2. **Non-maximum suppression** of the candidates over all tiles and levels (IoU 0.3, best score first).
3. The caller confirms each candidate with FaceMesh on a padded square crop around it (see
   :class:`~ditto_research.face.mediapipe_frontend.MediaPipeFrontend`), which gives the 478 landmarks and
   drops the detector's false positives.

Scanning stops early when only the largest face is wanted and a face was confirmed that is larger than
anything a finer level can still hold (0.15 S: faces that small were too small for level S).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["TileDetectorSettings", "nms_boxes", "pyramid_tiles", "scan_pyramid"]


@dataclass(frozen=True)
class TileDetectorSettings:
    """Constants of the tile pyramid (see the module docstring)."""

    input_size: int = 192  # the full-range detector's input side
    min_ratio: float = 0.15  # smallest face it finds, as a fraction of its input side
    overlap: float = 0.3  # tile overlap, as a fraction of the tile side
    min_face: int = 24  # pixels: the pyramid's floor when no min_face_size is set
    nms_iou: float = 0.3
    min_score: float = 0.5


def pyramid_tiles(
    height: int, width: int, min_face: int, settings: TileDetectorSettings
) -> Iterator[list[tuple[int, int, int]]]:
    """Per pyramid level, coarse to fine: the (y, x, side) squares covering an (H, W) image."""
    side = min(height, width)
    while True:
        stride = max(1, int(side * (1 - settings.overlap)))
        ys = list(range(0, height - side + 1, stride))
        xs = list(range(0, width - side + 1, stride))
        if ys[-1] != height - side:
            ys.append(height - side)
        if xs[-1] != width - side:
            xs.append(width - side)
        yield [(y, x, side) for y in ys for x in xs]
        if side * settings.min_ratio <= min_face or side // 2 < settings.input_size // 4:
            return
        side //= 2


def nms_boxes(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS on (K, 5) x1, y1, x2, y2, score rows; the kept rows, best score first."""
    if len(boxes) == 0:
        return boxes.reshape(0, 5)
    order = boxes[:, 4].argsort()[::-1]
    boxes = boxes[order]
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = np.zeros(len(boxes), bool)
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        top_left = np.maximum(boxes[i, :2], boxes[:, :2])
        bottom_right = np.minimum(boxes[i, 2:4], boxes[:, 2:4])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        overlap = inter / np.maximum(areas[i] + areas - inter, 1e-9)
        suppressed |= overlap > iou
    return boxes[keep]


def _detect_in(
    tile: np.ndarray, detect: Callable[[np.ndarray], np.ndarray], settings: TileDetectorSettings
) -> np.ndarray:
    """The detector on a square ``tile`` resized to its input: (n, 5) boxes relative to the tile, float64."""
    size = tile.shape[0]
    if size != settings.input_size:
        interpolation = cv2.INTER_AREA if size > settings.input_size else cv2.INTER_LINEAR
        tile = cv2.resize(tile, (settings.input_size, settings.input_size), interpolation=interpolation)
    return np.array(detect(np.ascontiguousarray(tile)), np.float64).reshape(-1, 5)


def scan_pyramid(
    rgb: np.ndarray,
    detect: Callable[[np.ndarray], np.ndarray],
    min_face: int,
    settings: TileDetectorSettings,
    confirmed_size: Callable[[np.ndarray], float | None] | None = None,
) -> np.ndarray:
    """(K, 5) candidate face boxes x1, y1, x2, y2, score in ``rgb`` pixels, after NMS.

    ``detect(tile (s, s, 3) uint8) -> (n, 5)`` boxes in *relative* tile coordinates (0..1) with scores.
    ``confirmed_size(candidates)``: when given, called after each level with that level's new candidates;
    it returns the size of the largest face confirmed so far (or None), and the scan stops once that size is
    beyond what the finer levels can hold.
    """
    height, width = rgb.shape[:2]
    found: list[np.ndarray] = []
    # A face that fills the whole image (a tight crop) is too large for every tile: look at the image once
    # with a margin of half its size around it (edges replicated), where such a face fills half the input.
    side = 2 * max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    padded = cv2.copyMakeBorder(
        rgb, top, side - height - top, left, side - width - left, cv2.BORDER_REPLICATE
    )
    whole = _detect_in(padded, detect, settings)
    whole[:, [0, 2]] = whole[:, [0, 2]] * side - left
    whole[:, [1, 3]] = whole[:, [1, 3]] * side - top
    found.append(whole)
    if confirmed_size is not None:
        confirmed_size(nms_boxes(whole, settings.nms_iou))
    for level in pyramid_tiles(height, width, max(min_face, settings.min_face), settings):
        side = level[0][2]
        new: list[np.ndarray] = []
        for y, x, s in level:
            boxes = _detect_in(rgb[y : y + s, x : x + s], detect, settings)
            if len(boxes):
                boxes[:, [0, 2]] = boxes[:, [0, 2]] * s + x
                boxes[:, [1, 3]] = boxes[:, [1, 3]] * s + y
                new.append(boxes)
        level_boxes = nms_boxes(np.concatenate(new), settings.nms_iou) if new else np.zeros((0, 5))
        found.append(level_boxes)
        if confirmed_size is not None:
            largest = confirmed_size(level_boxes)
            if largest is not None and largest >= settings.min_ratio * side:
                break
    every = np.concatenate(found) if found else np.zeros((0, 5))
    return nms_boxes(every[every[:, 4] >= settings.min_score], settings.nms_iou).astype(np.float32)
