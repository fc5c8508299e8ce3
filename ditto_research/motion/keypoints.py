"""Implicit-keypoint math: pose bins to degrees, Euler rotations, and the keypoint transform.

A motion record (what the motion extractor and the audio-to-motion model produce) is a mapping with the
official keys; every value carries a leading frame axis ``N`` (the reference always uses ``N = 1``):

=========  ===============  =====================================================================
key        shape            meaning
=========  ===============  =====================================================================
``kp``     (N, 63)          canonical keypoints x_c (21 points x xyz), source only
``scale``  (N, 1)           uniform scale s
``pitch``  (N, 66) | (N,)   66-bin logits, or degrees once a pose control converted it
``yaw``    (N, 66) | (N,)   idem
``roll``   (N, 66) | (N,)   idem
``t``      (N, 3)           translation; only tx, ty are used
``exp``    (N, 63)          expression offsets delta (21 points x xyz)
=========  ===============  =====================================================================

The posed keypoints are (LivePortrait Eqn. 2) ``x = s * (x_c R^T + delta) + [tx, ty, 0]`` with row-vector
keypoints and ``R = Rz(roll) Ry(yaw) Rx(pitch)``.

Everything here is vectorised over frames. The numpy functions compute in float32 with the reference's
operation order (that is what the golden data pins); the ``*_torch`` twins are for batched or on-device use.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

NUM_POSE_BINS = 66
NUM_KEYPOINTS = 21
# Bin b covers the angle b * 3 - 97.5 degrees (bins are 3 degrees wide, spanning [-97.5, 100.5)).
BIN_WIDTH_DEG = 3.0
BIN_OFFSET_DEG = 97.5


def is_pose_logits(angle: np.ndarray | torch.Tensor) -> bool:
    """True when ``angle`` holds 66-bin logits (N, 66); False for degrees (N,)."""
    return angle.ndim > 1 and angle.shape[-1] == NUM_POSE_BINS


def bin66_to_degree(logits: np.ndarray) -> np.ndarray:
    """Expected angle of a 66-bin pose head: (..., 66) logits -> (...) degrees, float32.

    ``sum(softmax(logits) * arange(66)) * 3 - 97.5``, with the softmax shifted by the row maximum.
    """
    logits = np.asarray(logits)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = shifted / shifted.sum(axis=-1, keepdims=True)
    bins = np.arange(NUM_POSE_BINS, dtype=np.float32)
    return np.sum(probs * bins, axis=-1) * BIN_WIDTH_DEG - BIN_OFFSET_DEG


def to_degrees(angle: np.ndarray) -> np.ndarray:
    """Degrees of a pose entry: logits (N, 66) are converted, degrees (N,) pass through unchanged."""
    return bin66_to_degree(angle) if is_pose_logits(angle) else angle


def rotation_matrix(pitch: np.ndarray, yaw: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Rotation ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` for angles in degrees: (N,) each -> (N, 3, 3).

    Rx turns about the x axis by pitch, Ry about y by yaw, Rz about z by roll (right-handed, column vectors).
    """
    x, y, z = (np.asarray(a).reshape(-1) / 180 * np.pi for a in (pitch, yaw, roll))
    rot_x = _axis_rotation(x, axis=0)
    rot_y = _axis_rotation(y, axis=1)
    rot_z = _axis_rotation(z, axis=2)
    return (rot_z @ rot_y) @ rot_x


def _axis_rotation(radians: np.ndarray, axis: int) -> np.ndarray:
    """(N,) radians -> (N, 3, 3) right-handed rotations about x (0), y (1) or z (2)."""
    cos, sin = np.cos(radians), np.sin(radians)
    rot = np.zeros((radians.shape[0], 3, 3), dtype=np.result_type(radians, np.float32))
    rot[:, axis, axis] = 1
    i, j = [a for a in range(3) if a != axis]
    # About y the sine signs flip (z x x = y keeps the cyclic order x -> y -> z).
    sign = -1 if axis == 1 else 1
    rot[:, i, i] = cos
    rot[:, j, j] = cos
    rot[:, i, j] = -sin * sign
    rot[:, j, i] = sin * sign
    return rot


def transform_keypoints(
    kp: np.ndarray, rotation: np.ndarray, exp: np.ndarray, scale: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """``scale * (kp @ rotation^T + exp) + [tx, ty, 0]`` -> (N, K, 3) float32.

    Args:
        kp: canonical keypoints, (N, K*3) or (N, K, 3).
        rotation: (N, 3, 3) from :func:`rotation_matrix`.
        exp: expression offsets, (N, K*3) or (N, K, 3).
        scale: (N, 1) (any shape with N elements).
        t: (N, 3); its z component is ignored.
    """
    n = rotation.shape[0]
    posed = np.matmul(kp.reshape(n, -1, 3), np.swapaxes(rotation, -1, -2)) + exp.reshape(n, -1, 3)
    posed *= scale.reshape(n, 1, 1)
    posed[:, :, 0:2] += t.reshape(n, -1)[:, None, 0:2]
    return posed


def transform_keypoint(info: Mapping[str, np.ndarray]) -> np.ndarray:
    """Posed keypoints of a motion record (see the module docstring): -> (N, 21, 3) float32.

    Angles may be logits or degrees, independently per angle (the stitcher's pose controls convert one
    angle to degrees and leave the others as logits).
    """
    rotation = rotation_matrix(to_degrees(info["pitch"]), to_degrees(info["yaw"]), to_degrees(info["roll"]))
    return transform_keypoints(info["kp"], rotation, info["exp"], info["scale"], info["t"])


# ---- torch twins (same formulas; for batched / on-device use) ----------------------------------------------


def bin66_to_degree_torch(logits: torch.Tensor) -> torch.Tensor:
    """(..., 66) logits -> (...) degrees; torch version of :func:`bin66_to_degree`."""
    bins = torch.arange(NUM_POSE_BINS, dtype=logits.dtype, device=logits.device)
    return (torch.softmax(logits, dim=-1) * bins).sum(dim=-1) * BIN_WIDTH_DEG - BIN_OFFSET_DEG


def rotation_matrix_torch(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (N,) each -> ``Rz @ Ry @ Rx`` (N, 3, 3); torch version of :func:`rotation_matrix`."""
    x, y, z = (a.reshape(-1) / 180 * torch.pi for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(x), torch.zeros_like(x)

    def stack(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)

    rot_x = stack([[one, zero, zero], [zero, x.cos(), -x.sin()], [zero, x.sin(), x.cos()]])
    rot_y = stack([[y.cos(), zero, y.sin()], [zero, one, zero], [-y.sin(), zero, y.cos()]])
    rot_z = stack([[z.cos(), -z.sin(), zero], [z.sin(), z.cos(), zero], [zero, zero, one]])
    return (rot_z @ rot_y) @ rot_x


def transform_keypoints_torch(
    kp: torch.Tensor, rotation: torch.Tensor, exp: torch.Tensor, scale: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Torch version of :func:`transform_keypoints` (same argument shapes) -> (N, K, 3)."""
    n = rotation.shape[0]
    posed = (kp.reshape(n, -1, 3) @ rotation.transpose(-1, -2) + exp.reshape(n, -1, 3)) * scale.reshape(
        n, 1, 1
    )
    shift = torch.zeros_like(posed[:, :1, :])
    shift[:, 0, 0:2] = t.reshape(n, -1)[:, 0:2]
    return posed + shift
