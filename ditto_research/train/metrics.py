"""Validation measures of sampled motion windows against the real ones (numpy, per window).

- ``part_errors``: mean squared error per motion part (scale, pitch, yaw, roll, t, exp) of a sampled window
  against the real window, in the motion vector's own units (pose parts are the 66-bin logits the LMDM makes);
- ``jitter``: mean absolute second difference along the window (frame-to-frame acceleration), for the
  sampled and for the real window: a model that shakes shows a ratio above 1;
- ``mouth_audio_correlation``: Pearson correlation, over the window's frames, between the mouth opening — the
  expression offset of implicit keypoint 19 along y, the one LivePortrait's own lip-open control moves — and
  the audio's RMS per frame (``audio_rms`` of the prepared clip). A model that moves the mouth with the
  speech correlates like the real motion does.
"""

from __future__ import annotations

import numpy as np

from ditto_research.motion.format import MOTION_LAYOUT

__all__ = ["MOUTH_OPEN_COLUMN", "jitter", "mouth_audio_correlation", "part_errors"]

# exp is (21 keypoints x 3) in the motion vector; keypoint 19's y offset opens the mouth.
MOUTH_OPEN_COLUMN = MOTION_LAYOUT.slice("exp").start + 19 * 3 + 1


def part_errors(sampled: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """MSE per motion part of ``sampled`` vs ``real`` windows (..., S, 265)."""
    out = {}
    for key in MOTION_LAYOUT.motion_keys:
        columns = MOTION_LAYOUT.slice(key)
        out[key] = float(np.mean((sampled[..., columns] - real[..., columns]) ** 2))
    return out


def jitter(motion: np.ndarray) -> float:
    """Mean |second difference| along the window axis of (..., S, 265) motion."""
    return float(np.mean(np.abs(np.diff(motion, n=2, axis=-2))))


def mouth_audio_correlation(motion: np.ndarray, audio_rms: np.ndarray) -> float | None:
    """Pearson r between the mouth opening of (S, 265) ``motion`` and (S,) ``audio_rms``; None when either
    is constant (silence, or a still mouth)."""
    mouth = np.asarray(motion, dtype=np.float64)[:, MOUTH_OPEN_COLUMN]
    rms = np.asarray(audio_rms, dtype=np.float64)
    if mouth.std() < 1e-12 or rms.std() < 1e-12:
        return None
    return float(np.corrcoef(mouth, rms)[0, 1])
