"""CutDetector: no cut over the real talking clips (``../shared/real_clips``), exactly one at the join of two
different clips and at a hard cut between two skimage images; the gap rule, size changes and bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from ditto_research.errors import ConfigError, InputError
from ditto_research.media.source import stream_video
from ditto_research.prepare.cuts import DEFAULT_THRESHOLD, CutDetector

REAL_CLIPS = Path(__file__).resolve().parents[2].parent / "shared" / "real_clips"
CLOSE_UP = REAL_CLIPS / "-1wCGAxqT_4+000000_000177+p0.mp4"  # 412x454, a face filling the frame
INTERVIEW = REAL_CLIPS / "Clip+WSGW-7gHS6A+P0+C1+F2551-2669.mp4"  # 1920x1080, decoded here at 480x270


def _decode(path: Path) -> list[np.ndarray]:
    if not path.is_file():
        pytest.skip(f"real clip {path} not present")
    with stream_video(path, max_size=480, fps=25) as stream:
        return list(stream.frames())


@pytest.fixture(scope="module")
def close_up() -> list[np.ndarray]:
    return _decode(CLOSE_UP)


@pytest.fixture(scope="module")
def interview() -> list[np.ndarray]:
    return _decode(INTERVIEW)


def _run(frames: list[np.ndarray], detector: CutDetector | None = None) -> tuple[list[int], list[float]]:
    """Indices of the frames that start a new shot, and every frame's score."""
    detector = detector or CutDetector()
    cuts, scores = [], []
    for index, frame in enumerate(frames):
        if detector.update(frame):
            cuts.append(index)
        scores.append(detector.score)
    return cuts, scores


def _resized(frames: list[np.ndarray], like: np.ndarray) -> list[np.ndarray]:
    return [
        cv2.resize(frame, (like.shape[1], like.shape[0]), interpolation=cv2.INTER_AREA) for frame in frames
    ]


@pytest.mark.parametrize("clip", ["close_up", "interview"])
def test_a_real_talking_clip_has_no_cut(clip, request):
    frames = request.getfixturevalue(clip)
    cuts, scores = _run(frames)
    assert len(frames) > 150
    assert cuts == []
    # measured 4.04 (close-up) and 2.46 (interview): well clear of the threshold, not just under it
    assert max(scores) < DEFAULT_THRESHOLD / 3


@pytest.mark.parametrize("first_is_close_up", [True, False])
def test_two_different_clips_joined_give_one_cut_at_the_join(close_up, interview, first_is_close_up):
    first, second = (close_up, interview) if first_is_close_up else (interview, close_up)
    frames = first + _resized(second, first[0])
    cuts, scores = _run(frames)
    assert cuts == [len(first)]
    assert scores[len(first)] > 2 * DEFAULT_THRESHOLD  # measured 48.8


def _jittered(image: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    """``count`` copies of ``image`` with a small drift and sensor-like noise, as consecutive frames."""
    rng = np.random.default_rng(seed)
    frames = []
    for step in range(count):
        shift = np.float32([[1, 0, step % 3], [0, 1, step % 2]])
        moved = cv2.warpAffine(image, shift, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT)
        noisy = moved.astype(np.int16) + rng.integers(-4, 5, moved.shape, dtype=np.int16)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return frames


def test_a_hard_cut_between_two_images_is_found_once():
    astronaut = data.astronaut()
    coffee = cv2.resize(data.coffee(), (astronaut.shape[1], astronaut.shape[0]), interpolation=cv2.INTER_AREA)
    frames = _jittered(astronaut, 12, seed=0) + _jittered(coffee, 12, seed=1)
    cuts, scores = _run(frames)
    assert cuts == [12]
    assert max(scores[:12] + scores[13:]) < DEFAULT_THRESHOLD / 2  # drift + noise: up to 7.0
    assert scores[12] > 2 * DEFAULT_THRESHOLD  # measured 67.6


def test_the_first_frame_is_no_cut_and_scores_zero():
    detector = CutDetector()
    assert detector.update(data.astronaut()) is False
    assert detector.score == 0.0 and detector.frames == 1


def test_cuts_closer_than_the_gap_are_dropped():
    astronaut = data.astronaut()
    coffee = cv2.resize(data.coffee(), (astronaut.shape[1], astronaut.shape[0]))
    alternating = [astronaut if i % 2 == 0 else coffee for i in range(10)]  # a cut at every frame
    assert _run(alternating)[0] == list(range(1, 10))  # default: every cut reported
    assert _run(alternating, CutDetector(min_gap_frames=3))[0] == [3, 6, 9]


def test_a_change_of_frame_size_is_a_cut_and_reset_forgets():
    detector = CutDetector()
    astronaut = data.astronaut()
    detector.update(astronaut)
    assert detector.update(astronaut[:256]) is True
    assert detector.score == float("inf") and detector.last_cut == 1
    detector.reset()
    assert detector.update(astronaut) is False
    assert detector.frames == 1 and detector.last_cut == 0


@pytest.mark.parametrize(
    "kwargs, word",
    [({"threshold": 0}, "threshold"), ({"min_gap_frames": 0}, "min_gap_frames"), ({"width": 4}, "width")],
)
def test_bad_settings_are_refused_by_name(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        CutDetector(**kwargs)


@pytest.mark.parametrize(
    "frame", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3))]
)
def test_a_frame_that_is_not_rgb_uint8_is_refused(frame):
    with pytest.raises(InputError, match="uint8 RGB"):
        CutDetector().update(frame)
