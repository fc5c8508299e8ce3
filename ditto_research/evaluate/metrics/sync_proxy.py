"""Weights-free lip-sync proxy: how well the mouth opening follows the loudness of the audio.

No SyncNet download needed. Per video frame ``t`` (25 fps):

- ``mouth[t]``: inner-lip gap over face size, from MediaPipe FaceMesh on the output frame
  (:func:`mouth_opening_series`): distance between the inner-lip midpoints (FaceMesh 13, upper, and 14,
  lower) divided by the distance between the outer eye corners (33, 263). The eye distance stands for the face
  size because, unlike the face box, it does not grow when the jaw drops; the ratio does not depend on the
  frame size or on in-plane rotation.
- ``env[t]``: RMS of the audio samples of frame ``t`` (:func:`audio_rms_envelope`).

For each offset ``k`` in ``-max_offset .. max_offset`` the proxy takes the Pearson correlation of the pairs
``(mouth[t], env[t - k])`` over the frames where both exist (:func:`lagged_correlations`); it reports the peak
correlation and its offset (:func:`sync_proxy_score`).

Sign convention (the same as SyncNet's AV offset): **a positive offset means the video lags the audio** -- the
mouth at frame ``t`` moves with the sound of frame ``t - k``. Delaying the audio by ``k`` frames therefore
lowers the reported offset by ``k``.

Mouth opening and loudness are related but not the same thing (a closed-mouth /m/ is loud, a pause with an
open mouth is silent), so a perfectly synced real video scores well below 1; the proxy compares systems and
settings on the same audio, it is not an absolute score. Frames where no face is found are NaN and left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.errors import InputError

if TYPE_CHECKING:
    from ditto_research.face.frontend import FaceLandmarks
    from ditto_research.face.mediapipe_frontend import MediaPipeFrontend

__all__ = [
    "SyncProxyScore",
    "audio_rms_envelope",
    "lagged_correlations",
    "mouth_opening",
    "mouth_opening_series",
    "sync_proxy_score",
]

# FaceMesh indices: inner-lip midpoints and outer eye corners.
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
EYE_OUTER_CORNERS = (33, 263)
_OPENING_POINTS = (UPPER_INNER_LIP, LOWER_INNER_LIP, *EYE_OUTER_CORNERS)


@dataclass(frozen=True, eq=False)
class SyncProxyScore:
    """``peak_corr`` in [-1, 1] (NaN when undefined, e.g. a motionless mouth) at ``offset`` frames (None when
    undefined; positive: video lags audio); ``correlations`` per entry of ``offsets`` (-max .. max)."""

    peak_corr: float
    offset: int | None
    offsets: np.ndarray
    correlations: np.ndarray


def audio_rms_envelope(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> np.ndarray:
    """(F,) float64 RMS of mono ``audio`` per video frame: frame ``t`` covers samples
    ``[round(t hop), round((t + 1) hop))`` with ``hop = sample_rate / fps``; a trailing partial frame counts.

    Any sample scale works (Pearson correlation ignores it).
    """
    samples = np.asarray(audio)
    if samples.ndim != 1 or samples.size == 0:
        raise InputError(f"audio must be a non-empty mono (N,) array, got shape {samples.shape}")
    if sample_rate <= 0 or fps <= 0:
        raise InputError(f"sample_rate and fps must be positive, got {sample_rate} and {fps}")
    hop = sample_rate / fps
    num_frames = int(np.ceil(samples.size / hop - 1e-9))
    bounds = np.minimum(np.round(np.arange(num_frames + 1) * hop).astype(np.int64), samples.size)
    energy = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    counts = np.maximum(np.diff(bounds), 1)
    return np.sqrt(np.maximum(np.diff(energy[bounds]), 0.0) / counts)


def lagged_correlations(
    mouth: np.ndarray, envelope: np.ndarray, max_offset: int = 15, min_overlap: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of ``(mouth[t], envelope[t - k])`` for ``k = -max_offset .. max_offset``.

    Pairs with a NaN are skipped; an offset with fewer than ``min_overlap`` pairs, or a constant side, gets
    NaN. Returns ``(offsets (2 max_offset + 1,) int64, correlations (2 max_offset + 1,) float64)``.
    """
    mouth, envelope = np.asarray(mouth, dtype=np.float64), np.asarray(envelope, dtype=np.float64)
    if mouth.ndim != 1 or envelope.ndim != 1:
        raise InputError(f"mouth and envelope must be 1-D series, got {mouth.shape} and {envelope.shape}")
    if max_offset < 0 or min_overlap < 2:
        raise InputError(f"need max_offset >= 0 and min_overlap >= 2, got {max_offset} and {min_overlap}")
    offsets = np.arange(-max_offset, max_offset + 1)
    correlations = np.full(offsets.shape, np.nan)
    for index, k in enumerate(offsets):
        # t runs over frames where both mouth[t] and envelope[t - k] exist.
        start, stop = max(0, k), min(len(mouth), len(envelope) + k)
        if stop - start < min_overlap:
            continue
        x, y = mouth[start:stop], envelope[start - k : stop - k]
        valid = np.isfinite(x) & np.isfinite(y)
        if valid.sum() >= min_overlap:
            correlations[index] = _pearson(x[valid], y[valid])
    return offsets, correlations


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (up to rounding)."""
    x_centred, y_centred = x - x.mean(), y - y.mean()
    spread_x, spread_y = np.linalg.norm(x_centred), np.linalg.norm(y_centred)
    is_flat = spread_x <= 1e-9 * np.linalg.norm(x) or spread_y <= 1e-9 * np.linalg.norm(y)
    if is_flat or not spread_x * spread_y:
        return float("nan")
    return float(np.dot(x_centred, y_centred) / (spread_x * spread_y))


def sync_proxy_score(
    mouth_opening: np.ndarray,
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    fps: float = FPS,
    max_offset: int = 15,
    min_overlap: int = 10,
) -> SyncProxyScore:
    """Peak correlation of a mouth-opening series (T,) with the RMS envelope of ``audio``, and its offset.

    Of equal peaks the offset closest to 0 wins. ``audio`` starts with frame 0 of the video.
    """
    envelope = audio_rms_envelope(audio, sample_rate, fps)
    offsets, correlations = lagged_correlations(mouth_opening, envelope, max_offset, min_overlap)
    if np.isnan(correlations).all():
        return SyncProxyScore(float("nan"), None, offsets, correlations)
    by_distance = np.argsort(np.abs(offsets), kind="stable")  # 0, -1, 1, -2, 2, ...
    best = by_distance[int(np.nanargmax(correlations[by_distance]))]
    return SyncProxyScore(float(correlations[best]), int(offsets[best]), offsets, correlations)


def mouth_opening(face: FaceLandmarks) -> float:
    """Inner-lip gap / outer-eye-corner distance of one face (the MediaPipe front-end's landmarks); NaN for a
    degenerate face."""
    from ditto_research.evaluate.metrics.landmarks import facemesh_rows

    upper, lower, eye_a, eye_b = face.points[facemesh_rows(_OPENING_POINTS)].astype(np.float64)
    eye_distance = float(np.linalg.norm(eye_b - eye_a))
    return float(np.linalg.norm(lower - upper)) / eye_distance if eye_distance > 0 else float("nan")


def mouth_opening_series(
    frames: Sequence[np.ndarray] | np.ndarray,
    *,
    channel_order: Literal["rgb", "bgr"] = "rgb",
    frontend: MediaPipeFrontend | None = None,
) -> np.ndarray:
    """(T,) float64 inner-lip gap / outer-eye-corner distance per frame (NaN where no face is found).

    ``frames``: (T, H, W, 3) uint8 in ``channel_order``. ``frontend``: a MediaPipe front-end to reuse (its
    FaceMesh tracker follows the face across frames); by default one is made and closed afterwards.
    """
    from ditto_research.evaluate.metrics.landmarks import FaceTrack, mediapipe_frontend

    mesh, owned = mediapipe_frontend(frontend, "mouth_opening_series")
    opening = np.full(len(frames), np.nan)
    try:
        track = FaceTrack(mesh, channel_order)
        for index, frame in enumerate(frames):
            face = track.locate(frame, f"frame {index}")
            if face is None:
                continue
            opening[index] = mouth_opening(face)
    finally:
        if owned:
            mesh.close()
    return opening
