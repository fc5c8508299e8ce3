"""Per-clip statistics of the (N, 265) motion the audio-to-motion model produces.

They describe how much a clip moves, independently of rendering: a model that mumbles has low lip energy,
one that freezes the head has a small pose range. Definitions, for the expression offsets ``exp`` (N, 21, 3)
(columns 202:265, see :mod:`ditto_research.motion.format`) restricted to a keypoint group ``G``:

==================  =====================================================================================
``*_energy``        mean over frames and keypoints of ``|exp[t, k] - mean_t exp[:, k]|^2`` (squared
                    displacement from the clip's mean, summed over x, y, z): how far the group moves
``*_velocity``      mean over frame pairs and keypoints of ``|exp[t + 1, k] - exp[t, k]|^2`` (per frame,
                    so it depends on the frame rate; 0 for one frame): how fast / jittery it moves
==================  =====================================================================================

Groups (LivePortrait's implicit keypoints, as Ditto's controls use them): lips 6, 12, 14, 17, 19, 20 and
eyes 11, 13, 15, 16, 18. Ranges are peak to peak over the clip: pitch / yaw / roll in degrees (expected angle
of the 66-bin logits, :func:`~ditto_research.motion.keypoints.bin66_to_degree`), translation ``tx`` / ``ty``
in keypoint units (``tz`` is not used by the renderer), and ``scale``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ditto_research.errors import InputError
from ditto_research.motion.format import MOTION_LAYOUT
from ditto_research.motion.keypoints import NUM_KEYPOINTS, bin66_to_degree

__all__ = ["EYE_KEYPOINTS", "LIP_KEYPOINTS", "MotionStats", "keypoint_energy", "motion_stats"]

LIP_KEYPOINTS: tuple[int, ...] = (6, 12, 14, 17, 19, 20)
EYE_KEYPOINTS: tuple[int, ...] = (11, 13, 15, 16, 18)


@dataclass(frozen=True)
class MotionStats:
    """Statistics of one clip's motion (see the module docstring); ``as_dict()`` for tables and loggers."""

    num_frames: int
    lip_energy: float
    lip_velocity: float
    eye_energy: float
    eye_velocity: float
    pitch_range_deg: float
    yaw_range_deg: float
    roll_range_deg: float
    tx_range: float
    ty_range: float
    scale_range: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def keypoint_energy(exp: np.ndarray, keypoints: tuple[int, ...]) -> tuple[float, float]:
    """``(energy, velocity)`` of ``keypoints`` in expression offsets (N, 21, 3) or (N, 63) (module docs)."""
    offsets = np.asarray(exp, dtype=np.float64).reshape(len(exp), NUM_KEYPOINTS, 3)[:, list(keypoints)]
    energy = float(((offsets - offsets.mean(axis=0)) ** 2).sum(axis=-1).mean())
    velocity = float((np.diff(offsets, axis=0) ** 2).sum(axis=-1).mean()) if len(offsets) > 1 else 0.0
    return energy, velocity


def motion_stats(motion: np.ndarray) -> MotionStats:
    """Statistics of an (N, 265) motion array (an (N, 328) one with ``kp`` appended works too)."""
    motion = np.asarray(motion)
    widths = (MOTION_LAYOUT.motion_dim, MOTION_LAYOUT.full_dim)
    if motion.ndim != 2 or motion.shape[1] not in widths or len(motion) == 0:
        raise InputError(
            f"motion must be an (N, {widths[0]}) array with N >= 1 (or (N, {widths[1]})), got "
            f"shape {motion.shape}"
        )
    if not np.isfinite(motion).all():
        raise InputError("motion holds NaN or infinite values")

    def columns(key: str) -> np.ndarray:
        return motion[:, MOTION_LAYOUT.slice(key)].astype(np.float64)

    def peak_to_peak(values: np.ndarray) -> float:
        return float(np.ptp(values))

    exp = columns("exp")
    lip_energy, lip_velocity = keypoint_energy(exp, LIP_KEYPOINTS)
    eye_energy, eye_velocity = keypoint_energy(exp, EYE_KEYPOINTS)
    pitch, yaw, roll = (bin66_to_degree(columns(key)) for key in ("pitch", "yaw", "roll"))
    translation = columns("t")
    return MotionStats(
        num_frames=len(motion),
        lip_energy=lip_energy,
        lip_velocity=lip_velocity,
        eye_energy=eye_energy,
        eye_velocity=eye_velocity,
        pitch_range_deg=peak_to_peak(pitch),
        yaw_range_deg=peak_to_peak(yaw),
        roll_range_deg=peak_to_peak(roll),
        tx_range=peak_to_peak(translation[:, 0]),
        ty_range=peak_to_peak(translation[:, 1]),
        scale_range=peak_to_peak(columns("scale")),
    )
