"""CSIM: identity preservation, the cosine similarity of ArcFace embeddings (source vs each output frame).

The embedding follows insightface (``python-package/insightface/model_zoo/arcface_onnx.py`` and
``utils/face_align.py``), so any of its recognition ONNX files (``w600k_r50.onnx``, ``glintr100.onnx``) or
another ArcFace ONNX with input (N, 3, 112, 112) and output (N, D) gives the numbers papers report:

1. Five points per face (insightface's order, image left to right): eye, eye, nose tip, mouth corner,
   mouth corner. They come from the project's MediaPipe FaceMesh tracker instead of insightface's detector:
   each eye is the mean of its 16 contour points (``FACEMESH_RIGHT_EYE`` for the image-left eye,
   ``FACEMESH_LEFT_EYE`` for the other), the nose tip is point 1, the mouth corners are 61 and 291.
2. ``norm_crop``: the least-squares similarity (rotation, uniform scale, shift; Umeyama 1991, what
   ``skimage.transform.SimilarityTransform.estimate`` computes) that maps the five points onto
   :data:`ARCFACE_TEMPLATE` (insightface's ``arcface_dst``, 112 x 112 pixels), then ``cv2.warpAffine``
   (bilinear, black border).
3. Network input: the RGB crop (insightface feeds ``blobFromImages(..., swapRB=True)`` of its BGR images),
   ``(x - 127.5) / 127.5``; or raw 0..255 when the graph normalises itself (insightface's test: a ``Sub``
   and a ``Mul`` node among the first 8, as in the MXNet-converted models).

:func:`csim` is the mean cosine between the source embedding and the embeddings of the frames with a face.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from ditto_research.errors import InputError
from ditto_research.evaluate.metrics.landmarks import FaceTrack, facemesh_rows, mediapipe_frontend

if TYPE_CHECKING:
    from ditto_research.face.frontend import FaceLandmarks
    from ditto_research.face.mediapipe_frontend import MediaPipeFrontend

__all__ = [
    "ARCFACE_SIZE",
    "ARCFACE_TEMPLATE",
    "IdentityEmbedder",
    "align_face",
    "csim",
    "five_points",
    "frame_embeddings",
    "similarity_transform",
]

ARCFACE_SIZE = 112
# insightface utils/face_align.py ``arcface_dst``: eye, eye, nose tip, mouth corner, mouth corner (x, y).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
# FaceMesh contours (mediapipe face_mesh_connections): FACEMESH_RIGHT_EYE is the subject's right eye, on the
# image left (point 33, its outer corner, is image-left in a frontal face).
_EYE_IMAGE_LEFT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
_EYE_IMAGE_RIGHT = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
_NOSE_TIP, _MOUTH_CORNERS = 1, (61, 291)
_EXPECTED = f"expected an ArcFace ONNX: input (N, 3, {ARCFACE_SIZE}, {ARCFACE_SIZE}), output (N, 512)"
_BATCH = 32  # crops per network call when the batch dimension is free


def five_points(face: FaceLandmarks) -> np.ndarray:
    """(5, 2) float64 ArcFace points (eye, eye, nose tip, mouth corner, mouth corner; image left first) from
    the MediaPipe front-end's landmarks in image pixels."""
    points = face.points.astype(np.float64)
    corners = points[facemesh_rows((_NOSE_TIP, *_MOUTH_CORNERS))]
    return np.stack(
        [
            points[facemesh_rows(_EYE_IMAGE_LEFT)].mean(0),
            points[facemesh_rows(_EYE_IMAGE_RIGHT)].mean(0),
            *corners,
        ]
    )


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) float64 least-squares similarity mapping (K, 2) ``src`` onto ``dst`` (Umeyama 1991, no
    reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, sigma, vt = np.linalg.svd(covariance)
    signs = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(signs) @ vt
    variance = (src_c**2).sum() / len(src)
    if variance <= 0:
        raise InputError("the five face points coincide; cannot align the face")
    scale = float((sigma * signs).sum() / variance)
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def align_face(rgb: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """insightface ``norm_crop``: the (112, 112, 3) crop of ``rgb`` whose five ``points`` (5, 2) land on
    :data:`ARCFACE_TEMPLATE`, and the (2, 3) image-to-crop matrix."""
    matrix = similarity_transform(points, ARCFACE_TEMPLATE)
    crop = cv2.warpAffine(rgb, matrix, (ARCFACE_SIZE, ARCFACE_SIZE), borderValue=0.0)
    return crop, matrix


class IdentityEmbedder:
    """An ArcFace ONNX run with onnxruntime; checked on load.

    Args:
        path: the ONNX file (input (N, 3, 112, 112) float, output (N, D); D = 512 for insightface's).
        providers: onnxruntime execution providers.
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        import onnxruntime as ort

        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise InputError(f"identity model {self.path} does not exist or is not a file; {_EXPECTED}")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=list(providers))
        except Exception as e:  # onnxruntime raises its own types for unreadable / invalid graphs
            raise InputError(f"identity model {self.path} is not a loadable ONNX file; {_EXPECTED}") from e
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, ARCFACE_SIZE, ARCFACE_SIZE]:
            shapes = [i.shape for i in inputs]
            raise InputError(f"identity model {self.path} takes inputs {shapes}; {_EXPECTED}")
        if inputs[0].type != "tensor(float)":
            raise InputError(f"identity model {self.path} takes {inputs[0].type}; {_EXPECTED}")
        if len(outputs[0].shape) != 2:
            raise InputError(f"identity model {self.path} gives output {outputs[0].shape}; {_EXPECTED}")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        batch, width = inputs[0].shape[0], outputs[0].shape[1]
        # A graph exported with a fixed batch size gets exactly that many crops per call (padded).
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.dim = width if isinstance(width, int) and width > 0 else None  # D, when the graph states it
        self.input_mean, self.input_std = (0.0, 1.0) if _normalises_itself(self.path) else (127.5, 127.5)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, D) float32 embeddings of aligned (N, 112, 112, 3) uint8 RGB crops (not unit-normalised)."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (ARCFACE_SIZE, ARCFACE_SIZE, 3) or crops.dtype != np.uint8:
            raise InputError(f"crops must be (N, 112, 112, 3) uint8, got {crops.shape} {crops.dtype}")
        blob = (crops.astype(np.float32).transpose(0, 3, 1, 2) - self.input_mean) / self.input_std
        step = self.fixed_batch or _BATCH
        parts = []
        for start in range(0, len(blob), step):
            chunk = blob[start : start + step]
            if self.fixed_batch and len(chunk) < step:
                pad = np.zeros((step - len(chunk), *chunk.shape[1:]), np.float32)
                parts.append(self._run(np.concatenate([chunk, pad]))[: len(chunk)])
            else:
                parts.append(self._run(np.ascontiguousarray(chunk)))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim or 0), np.float32)

    def embed_face(self, rgb: np.ndarray, face: FaceLandmarks) -> np.ndarray:
        """(D,) float32 embedding of ``face`` (MediaPipe front-end landmarks) in the (H, W, 3) uint8 RGB
        image."""
        crop, _ = align_face(rgb, five_points(face))
        return self.embed_crops(crop[None])[0]

    def _run(self, blob: np.ndarray) -> np.ndarray:
        out = np.asarray(self.session.run([self.output_name], {self.input_name: blob})[0], np.float32)
        return out.reshape(len(blob), -1)


def _normalises_itself(path: Path) -> bool:
    """insightface's test for a graph that subtracts and scales its input itself (MXNet conversions)."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node[:8]
    names = [node.name for node in nodes]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return has_sub and has_mul


def frame_embeddings(
    frames: Sequence[np.ndarray] | np.ndarray,
    embedder: IdentityEmbedder,
    *,
    frontend: MediaPipeFrontend | None = None,
    channel_order: Literal["rgb", "bgr"] = "rgb",
) -> np.ndarray:
    """(T, D) float32 embeddings of the face tracked through ``frames``; NaN rows where there is no face."""
    mesh, owned = mediapipe_frontend(frontend, "frame_embeddings")
    rows: list[np.ndarray | None] = []
    try:
        track = FaceTrack(mesh, channel_order)
        for index, frame in enumerate(frames):
            face = track.locate(frame, f"frame {index}")
            if face is None:
                rows.append(None)
                continue
            rgb = np.asarray(frame)
            rgb = rgb if channel_order == "rgb" else np.ascontiguousarray(rgb[..., ::-1])
            rows.append(embedder.embed_face(rgb, face))
    finally:
        if owned:
            mesh.close()
    width = next((len(r) for r in rows if r is not None), embedder.dim or 0)
    empty = np.full(width, np.nan, np.float32)
    return np.stack([empty if r is None else r for r in rows]) if rows else np.zeros((0, 0), np.float32)


def csim(source_embedding: np.ndarray, frame_embeddings: np.ndarray) -> float:
    """Mean cosine similarity between ``source_embedding`` (D,) and the rows of ``frame_embeddings``
    (T, D); rows with a NaN (no face) are left out; NaN when none is left."""
    source = np.asarray(source_embedding, np.float64)
    frames = np.asarray(frame_embeddings, np.float64)
    if source.ndim != 1 or frames.ndim != 2 or frames.shape[1] != source.shape[0]:
        raise InputError(f"csim needs a (D,) and a (T, D) embedding, got {source.shape} and {frames.shape}")
    frames = frames[np.isfinite(frames).all(1)]
    source_norm = np.linalg.norm(source)
    if not len(frames) or not np.isfinite(source_norm) or source_norm == 0:
        return float("nan")
    cosines = frames @ source / (np.linalg.norm(frames, axis=1) * source_norm)
    return float(np.mean(cosines))
