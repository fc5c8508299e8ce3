"""LMD on real faces: zero on identical frames, k pixels of shift = k in the 256-pixel face unit at any
resolution, a one-frame offset of a real talking clip moves the mouth, faceless pairs are counted, skipped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from ditto_research.errors import InputError
from ditto_research.evaluate.metrics.landmarks import (
    MOUTH_POINTS,
    REFERENCE_FACE_SIZE,
    LandmarkDistance,
    landmark_distance,
)
from ditto_research.face.mediapipe_frontend import MediaPipeFrontend

REAL_CLIPS = Path(__file__).resolve().parents[2].parent / "shared" / "real_clips"
TALKING = REAL_CLIPS / "-1wCGAxqT_4+000000_000177+p0.mp4"  # 412x454, the face fills the frame


@pytest.fixture(scope="module")
def mesh() -> Iterator[MediaPipeFrontend]:
    frontend = MediaPipeFrontend()
    yield frontend
    frontend.close()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def _unit(frontend: MediaPipeFrontend, rgb: np.ndarray) -> float:
    """Normalised units per frame pixel: 256 over the reference face box."""
    return REFERENCE_FACE_SIZE / frontend.locate(rgb).size


def test_mouth_points_are_mediapipes_lip_contours() -> None:
    from mediapipe.tasks.python.vision.face_landmarker import FaceLandmarksConnections

    lips = FaceLandmarksConnections.FACE_LANDMARKS_LIPS
    assert MOUTH_POINTS == tuple(sorted({i for edge in lips for i in (edge.start, edge.end)}))


def test_a_frame_against_itself_is_exactly_zero(mesh: MediaPipeFrontend, astronaut: np.ndarray) -> None:
    with LandmarkDistance(mesh) as lmd:
        assert lmd.add(astronaut, astronaut) == (0.0, 0.0)
        assert lmd.add(astronaut, astronaut) == (0.0, 0.0)  # tracked from the previous frame
    assert (lmd.mean_mouth, lmd.mean_face, lmd.frames, lmd.frames_without_face) == (0.0, 0.0, 2, 0)


def test_a_shift_of_k_pixels_is_k_units(mesh: MediaPipeFrontend, astronaut: np.ndarray) -> None:
    unit = _unit(mesh, astronaut)
    mouth, face = [], []
    for k in (2, 4, 8, 16):
        plain = landmark_distance([np.roll(astronaut, k, axis=1)], [astronaut], frontend=mesh)
        centred = landmark_distance(
            [np.roll(astronaut, k, axis=1)], [astronaut], frontend=mesh, use_centring=True
        )
        # FaceMesh moves by the shift up to ~0.2 frame pixels of jitter (~0.5 units on this 108-pixel face).
        assert plain.mean_mouth == pytest.approx(k * unit, rel=0.15)
        assert plain.mean_face == pytest.approx(k * unit, rel=0.15)
        assert centred.mean_mouth < 1.5 and centred.mean_face < 1.5  # a shift is no change of shape
        mouth.append(plain.mean_mouth)
        face.append(plain.mean_face)
    assert np.all(np.diff(mouth) > 0) and np.all(np.diff(face) > 0)


def test_the_unit_does_not_depend_on_the_resolution(mesh: MediaPipeFrontend, astronaut: np.ndarray) -> None:
    """The same 4-pixel shift at 512 and 8 pixels at 1024 (the same motion of the face) give the same LMD."""
    large = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    small_lmd = landmark_distance([np.roll(astronaut, 4, axis=1)], [astronaut], frontend=mesh)
    large_lmd = landmark_distance([np.roll(large, 8, axis=1)], [large], frontend=mesh)
    assert large_lmd.mean_face == pytest.approx(small_lmd.mean_face, rel=0.1)
    assert large_lmd.mean_mouth == pytest.approx(small_lmd.mean_mouth, rel=0.1)


def test_channel_order_bgr_gives_the_rgb_result(mesh: MediaPipeFrontend, astronaut: np.ndarray) -> None:
    shifted = np.roll(astronaut, 4, axis=0)
    rgb = landmark_distance([shifted], [astronaut], frontend=mesh)
    bgr = landmark_distance([shifted[..., ::-1]], [astronaut[..., ::-1]], frontend=mesh, channel_order="bgr")
    assert (bgr.mean_mouth, bgr.mean_face) == (rgb.mean_mouth, rgb.mean_face)


def test_frames_without_a_face_are_skipped_and_counted(
    mesh: MediaPipeFrontend, astronaut: np.ndarray
) -> None:
    wall = np.full_like(astronaut, 127)
    shifted = np.roll(astronaut, 8, axis=1)
    lmd = landmark_distance(
        [astronaut, wall, shifted, astronaut], [astronaut, astronaut, astronaut, wall], frontend=mesh
    )
    assert (lmd.frames, lmd.frames_without_face) == (2, 2)
    alone = landmark_distance([shifted], [astronaut], frontend=mesh)
    assert lmd.mean_face == pytest.approx(alone.mean_face / 2, rel=0.05)  # (0 + shifted) / 2 measured pairs
    empty = landmark_distance([wall], [astronaut], frontend=mesh)
    assert (empty.frames, empty.frames_without_face) == (0, 1) and np.isnan(empty.mean_mouth)


def test_a_one_frame_offset_of_a_talking_clip_moves_the_mouth(mesh: MediaPipeFrontend) -> None:
    if not TALKING.is_file():
        pytest.skip(f"{TALKING} not present (../shared/real_clips)")
    from ditto_research.media.source import stream_video

    with stream_video(TALKING, 512, fps=25) as stream:
        frames = [frame for _, frame in zip(range(21), stream.frames())]
    same = landmark_distance(frames[:20], frames[:20], frontend=mesh)
    late = landmark_distance(frames[1:21], frames[:20], frontend=mesh)
    assert (same.mean_mouth, same.mean_face, same.frames) == (0.0, 0.0, 20)
    assert late.frames == 20 and late.frames_without_face == 0
    assert late.mean_mouth > 0.5 and late.mean_face > 0.5


def test_bad_inputs_are_one_line_errors(mesh: MediaPipeFrontend, astronaut: np.ndarray) -> None:
    with pytest.raises(InputError, match="2 generated and 1 reference"):
        landmark_distance([astronaut, astronaut], [astronaut], frontend=mesh)
    with pytest.raises(InputError, match=r"generated frame 0 must be an \(H, W, 3\) uint8 image"):
        landmark_distance([astronaut.astype(np.float32)], [astronaut], frontend=mesh)
    with pytest.raises(InputError, match="face_size must be positive"):
        LandmarkDistance(mesh, face_size=0)
    with pytest.raises(InputError, match="channel_order"):
        LandmarkDistance(mesh, channel_order="rbg")  # type: ignore[arg-type]
