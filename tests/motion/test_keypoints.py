"""Keypoint math: bin66_to_degree, Euler rotations, the posed-keypoint transform (numpy and torch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ditto_research.motion.keypoints import (
    bin66_to_degree,
    bin66_to_degree_torch,
    is_pose_logits,
    rotation_matrix,
    rotation_matrix_torch,
    to_degrees,
    transform_keypoint,
    transform_keypoints,
    transform_keypoints_torch,
)


def direct_degree(logits: np.ndarray) -> float:
    """The formula written out in float64 with plain Python: sum(softmax(l) * b) * 3 - 97.5."""
    values = [float(v) for v in logits]
    weights = [math.exp(v - max(values)) for v in values]
    return sum(w * b for b, w in enumerate(weights)) / sum(weights) * 3 - 97.5


def random_record(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "kp": rng.standard_normal((n, 63)).astype(np.float32) * 0.5,
        "scale": (1.5 + 0.1 * rng.standard_normal((n, 1))).astype(np.float32),
        "pitch": rng.standard_normal((n, 66)).astype(np.float32),
        "yaw": rng.standard_normal((n, 66)).astype(np.float32),
        "roll": rng.standard_normal((n, 66)).astype(np.float32),
        "t": rng.standard_normal((n, 3)).astype(np.float32) * 0.05,
        "exp": rng.standard_normal((n, 63)).astype(np.float32) * 0.02,
    }


def test_bin66_to_degree_matches_direct_formula() -> None:
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((5, 66)) * 3).astype(np.float32)
    logits[4] = 0  # uniform bins -> the centre angle, 32.5 * 3 - 97.5 = 0
    ours = bin66_to_degree(logits)
    assert ours.shape == (5,) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, [direct_degree(row) for row in logits], atol=1e-4)  # float32 vs float64
    assert abs(float(ours[4])) < 1e-4
    # A peaked distribution reads off its bin: bin 40 -> 40 * 3 - 97.5 = 22.5 degrees.
    peaked = np.full((1, 66), -50.0, dtype=np.float32)
    peaked[0, 40] = 50.0
    assert bin66_to_degree(peaked)[0] == pytest.approx(22.5, abs=1e-4)
    torch_deg = bin66_to_degree_torch(torch.from_numpy(logits)).numpy()
    np.testing.assert_allclose(torch_deg, ours, atol=1e-4)


def test_to_degrees_converts_logits_and_passes_degrees() -> None:
    logits = np.zeros((1, 66), dtype=np.float32)
    degrees = np.array([12.5], dtype=np.float32)
    assert is_pose_logits(logits) and not is_pose_logits(degrees)
    assert to_degrees(degrees) is degrees
    assert to_degrees(logits).shape == (1,)


def test_rotation_matrix_axes_and_order() -> None:
    # yaw +90 degrees alone maps the x axis to -z (right-handed, about y).
    rot = rotation_matrix(np.array([0.0]), np.array([90.0]), np.array([0.0]))[0]
    np.testing.assert_allclose(rot @ np.array([1.0, 0.0, 0.0]), [0.0, 0.0, -1.0], atol=1e-6)
    # roll +90: x -> y; pitch +90: y -> z.
    np.testing.assert_allclose(
        rotation_matrix(np.zeros(1), np.zeros(1), np.array([90.0]))[0] @ [1.0, 0, 0], [0, 1, 0], atol=1e-6
    )
    np.testing.assert_allclose(
        rotation_matrix(np.array([90.0]), np.zeros(1), np.zeros(1))[0] @ [0, 1.0, 0], [0, 0, 1], atol=1e-6
    )
    # Composition order Rz @ Ry @ Rx, vectorised over frames.
    angles = np.random.default_rng(0).uniform(-60, 60, (3, 4)).astype(np.float32)
    full = rotation_matrix(*angles)
    assert full.shape == (4, 3, 3) and full.dtype == np.float32
    zero = np.zeros(4, dtype=np.float32)
    expected = rotation_matrix(zero, zero, angles[2]) @ rotation_matrix(zero, angles[1], zero)
    expected = expected @ rotation_matrix(angles[0], zero, zero)
    np.testing.assert_allclose(full, expected, atol=1e-6)
    np.testing.assert_allclose(
        full @ np.swapaxes(full, 1, 2), np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-6
    )
    torch_rot = rotation_matrix_torch(*(torch.from_numpy(a) for a in angles)).numpy()
    np.testing.assert_allclose(torch_rot, full, atol=1e-6)


def test_transform_keypoint_formula_and_vectorisation() -> None:
    rng = np.random.default_rng(1)
    record = random_record(rng, 3)
    posed = transform_keypoint(record)
    assert posed.shape == (3, 21, 3) and posed.dtype == np.float32

    # float64 restatement: s * (kp @ R^T + exp) + [tx, ty, 0].
    deg = [bin66_to_degree(record[k]).astype(np.float64) for k in ("pitch", "yaw", "roll")]
    rot = rotation_matrix(*deg)
    kp = record["kp"].astype(np.float64).reshape(3, 21, 3)
    expected = record["scale"][:, :, None] * (kp @ np.swapaxes(rot, 1, 2) + record["exp"].reshape(3, 21, 3))
    expected[:, :, :2] += record["t"][:, None, :2]
    np.testing.assert_allclose(posed, expected, atol=1e-5)

    # Frame i of the batch equals the single-frame call; degrees and logits give the same result.
    single = transform_keypoint({k: v[1:2] for k, v in record.items()})
    np.testing.assert_allclose(posed[1:2], single, atol=1e-6)
    in_degrees = dict(record, yaw=bin66_to_degree(record["yaw"]))
    np.testing.assert_array_equal(transform_keypoint(in_degrees), posed)

    torch_posed = transform_keypoints_torch(
        torch.from_numpy(record["kp"]),
        torch.from_numpy(rotation_matrix(*[bin66_to_degree(record[k]) for k in ("pitch", "yaw", "roll")])),
        torch.from_numpy(record["exp"]),
        torch.from_numpy(record["scale"]),
        torch.from_numpy(record["t"]),
    ).numpy()
    np.testing.assert_allclose(torch_posed, posed, atol=1e-5)


def test_transform_keypoints_ignores_tz_and_keeps_inputs() -> None:
    kp = np.ones((1, 21, 3), dtype=np.float32)
    before = kp.copy()
    out = transform_keypoints(
        kp,
        np.eye(3, dtype=np.float32)[None],
        np.zeros((1, 63), np.float32),
        np.full((1, 1), 2.0, np.float32),
        np.array([[0.5, -0.5, 9.0]], np.float32),
    )
    np.testing.assert_array_equal(out[0, 0], [2.5, 1.5, 2.0])
    np.testing.assert_array_equal(kp, before)
