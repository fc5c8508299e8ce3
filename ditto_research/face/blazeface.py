"""BlazeFace decoding as MediaPipe's face-detection graph does it: SSD anchors, box + keypoint decoding,
weighted non-maximum suppression.

The network (run by :class:`~ditto_research.face.tflite_models.TfliteModel`) gives, per anchor, 16 numbers
(box centre offset x, y, width, height, then 6 keypoints x, y: right eye, left eye, nose tip, mouth, right
ear, left ear — "right" is the subject's, on the image left) and one logit. The graph's settings:

===============  ====================  ====================  ==============================================
                 short range           full range            meaning
===============  ====================  ====================  ==============================================
input            128, range [-1, 1]    192, range [-1, 1]    square RGB
strides          8, 16, 16, 16         4                     one anchor grid per stride; equal strides merge
anchors / cell   2 per layer           1                     ``interpolated_scale_aspect_ratio`` 1.0 / 0.0
anchors          896                   2304                  16*16*2 + 8*8*6, and 48*48
scale            128                   192                   raw offsets are in input pixels
===============  ====================  ====================  ==============================================

Anchors have a fixed unit size, so decoding is ``centre = raw / scale + anchor`` and ``size = raw / scale``;
the score is ``sigmoid(clip(logit, -100, 100))``. Overlapping detections (IoU > 0.3) are merged by
*weighted* NMS: the best one keeps its score, its box and keypoints become the score-weighted mean of the
cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ditto_research.face.tflite_models import TfliteModel

__all__ = ["BlazeFace", "BlazeFaceSpec", "Detections", "FULL_RANGE_SPEC", "SHORT_RANGE_SPEC", "weighted_nms"]


@dataclass(frozen=True)
class BlazeFaceSpec:
    """One BlazeFace variant's graph settings (see the module table)."""

    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int


SHORT_RANGE_SPEC = BlazeFaceSpec(input_size=128, strides=(8, 16, 16, 16), anchors_per_layer=2)
FULL_RANGE_SPEC = BlazeFaceSpec(input_size=192, strides=(4,), anchors_per_layer=1)


@dataclass(frozen=True)
class Detections:
    """Faces in one input, best first: ``boxes`` (K, 4) x1, y1, x2, y2 and ``keypoints`` (K, 6, 2), both
    relative to the input (0..1), ``scores`` (K,)."""

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def anchor_centers(spec: BlazeFaceSpec) -> np.ndarray:
    """(N, 2) anchor centres x, y relative to the input, in the network's output order."""
    centers: list[np.ndarray] = []
    layer = 0
    while layer < len(spec.strides):
        stride = spec.strides[layer]
        same = 1
        while layer + same < len(spec.strides) and spec.strides[layer + same] == stride:
            same += 1
        cells = -(-spec.input_size // stride)
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        per_cell = same * spec.anchors_per_layer
        centers.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), per_cell, axis=0))
        layer += same
    return np.concatenate(centers)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-maximum suppression: each cluster (IoU > ``iou`` with its best member) becomes
    one detection with the best score and the score-weighted mean box and keypoints; best first."""
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    left = np.ones(len(scores), bool)
    out_boxes, out_points, out_scores = [], [], []
    for i in range(len(scores)):
        if not left[i]:
            continue
        top_left = np.maximum(boxes[i, :2], boxes[:, :2])
        bottom_right = np.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        overlap = inter / np.maximum(areas[i] + areas - inter, 1e-12)
        cluster = left & (overlap > iou)
        cluster[i] = True
        weights = scores[cluster] / scores[cluster].sum()
        out_boxes.append(weights @ boxes[cluster])
        out_points.append(np.tensordot(weights, keypoints[cluster], axes=1))
        out_scores.append(scores[i])
        left &= ~cluster
    if not out_scores:
        return np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0, np.float32)
    return (
        np.stack(out_boxes).astype(np.float32),
        np.stack(out_points).astype(np.float32),
        np.array(out_scores, np.float32),
    )


class BlazeFace:
    """A BlazeFace network with its decoding: ``detect(batch (B, S, S, 3) uint8 RGB)`` -> one
    :class:`Detections` per image (scores >= ``min_score``, after weighted NMS)."""

    def __init__(self, model: TfliteModel, spec: BlazeFaceSpec, *, nms_iou: float = 0.3) -> None:
        if model.input_size != (spec.input_size, spec.input_size):
            raise ValueError(f"{model.path.name} takes {model.input_size}, the spec says {spec.input_size}")
        self.model = model
        self.spec = spec
        self.nms_iou = nms_iou
        self._anchors = anchor_centers(spec)

    def detect(self, images: np.ndarray, min_score: float) -> list[Detections]:
        x = images.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)
        raw_boxes, raw_scores = self.model(x)
        raw_boxes = raw_boxes.reshape(len(images), -1, 16)
        raw_scores = raw_scores.reshape(len(images), -1)
        if raw_boxes.shape[1] != len(self._anchors):
            raise ValueError(
                f"{self.model.path.name} gives {raw_boxes.shape[1]} anchors, expected {len(self._anchors)}"
            )
        return [self._decode(b, s, min_score) for b, s in zip(raw_boxes, raw_scores)]

    def _decode(self, raw: np.ndarray, logits: np.ndarray, min_score: float) -> Detections:
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
        keep = scores >= min_score
        raw, scores, anchors = raw[keep] / self.spec.input_size, scores[keep], self._anchors[keep]
        centers = raw[:, :2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centers - half, centers + half], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        boxes, keypoints, scores = weighted_nms(boxes, keypoints, scores, self.nms_iou)
        return Detections(boxes, keypoints, scores)
