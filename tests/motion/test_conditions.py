"""Condition builder: golden parity for the four ConditionHandler cases, frame lookup, emotion parsing."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_research.errors import ConfigError, InputError
from ditto_research.motion.conditions import (
    EMOTION_LABELS,
    ConditionBuilder,
    ConditionFlags,
    cond_dim,
    emotion_vector,
    parse_emotion,
)


@pytest.fixture(scope="module")
def golden(load_golden) -> dict[str, np.ndarray]:
    return load_golden("condition_handler")


def _golden_emotion(golden: dict[str, np.ndarray], case: int):
    if case == 0:
        return 4
    if case == 1:
        return [3, 4]
    return [[int(v) for v in row if v >= 0] for row in golden["emo_frames_padded"]]


@pytest.mark.parametrize("case", [0, 1, 2, 3])
def test_matches_golden(golden: dict[str, np.ndarray], case: int) -> None:
    flags = ConditionFlags(*(bool(v) for v in golden[f"case{case}_flags"]))
    n_eye = int(golden[f"case{case}_n_eye"])
    source_info = {
        "x_s_info_lst": [{}],
        "sc": golden["sc"],
        "eye_open_lst": [golden["eye_open"][i : i + 1] for i in range(n_eye)],
        "eye_ball_lst": [golden["eye_ball"][i : i + 1] for i in range(n_eye)],
    }
    builder = ConditionBuilder(flags)
    eye_f0_mode = bool(golden[f"case{case}_eye_f0_mode"])
    builder.setup_from_source_info(source_info, _golden_emotion(golden, case), eye_f0_mode)
    ours = np.stack([builder(golden["aud_feat"], int(idx)) for idx in golden["idxs"]])
    assert ours.dtype == np.float32
    assert ours.shape[-1] == builder.dim == cond_dim(flags)
    # Copies, a softmax and index lookups in the reference's order: measured bit-identical.
    np.testing.assert_array_equal(ours, golden[f"case{case}_cond"])


def test_cond_dim() -> None:
    assert cond_dim(ConditionFlags()) == 1103
    assert cond_dim(ConditionFlags(True, False, False, True)) == 1038
    assert cond_dim(ConditionFlags(False, False, False, False)) == 1024
    assert cond_dim(ConditionFlags(use_emo=False), audio_dim=768) == 768 + 2 + 6 + 63


def test_frame_lookup_other_window() -> None:
    """A 12-frame window starting at -3: emotion rows cycle, eye rows ping-pong, sc repeats."""
    eye_open = np.arange(8, dtype=np.float32).reshape(4, 2)
    eye_ball = np.arange(24, dtype=np.float32).reshape(4, 6)
    emotion = np.eye(8, dtype=np.float32)[:3]
    sc = np.linspace(0, 1, 63, dtype=np.float32)
    builder = ConditionBuilder()
    builder.setup(sc=sc, eye_open=eye_open, eye_ball=eye_ball, emotion=emotion)
    feats = np.full((12, 5), 7.0, np.float32)
    out = builder(feats, -3)
    frames = np.maximum(np.arange(-3, 9), 0)
    assert out.shape == (12, 5 + 8 + 2 + 6 + 63)
    np.testing.assert_array_equal(out[:, :5], feats)
    np.testing.assert_array_equal(out[:, 5:13], emotion[frames % 3])
    mirrored = [0, 0, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0]
    np.testing.assert_array_equal(out[:, 13:15], eye_open[mirrored])
    np.testing.assert_array_equal(out[:, 15:21], eye_ball[mirrored])
    np.testing.assert_array_equal(out[:, 21:], np.broadcast_to(sc, (12, 63)))

    builder.setup(sc=sc, eye_open=eye_open, eye_ball=eye_ball, emotion=emotion, eye_f0_mode=True)
    np.testing.assert_array_equal(builder(feats, 5)[:, 13:15], np.broadcast_to(eye_open[0], (12, 2)))


def test_emotion_vector_and_names() -> None:
    vec = emotion_vector([3, 4])
    assert vec.dtype == np.float32 and abs(float(vec.sum()) - 1) < 1e-6
    assert vec[3] == vec[4] and vec[3] > 0.49 and vec[0] < 2e-4
    np.testing.assert_array_equal(parse_emotion("Happy"), parse_emotion(3))
    np.testing.assert_array_equal(parse_emotion(["happy", "neutral"]), vec[None])
    np.testing.assert_array_equal(parse_emotion(np.int64(4)), parse_emotion(4))
    np.testing.assert_allclose(emotion_vector([]), np.full(8, 1 / 8), rtol=1e-6)
    assert parse_emotion([[1], [2, 5], []]).shape == (3, 8)
    probs = np.random.RandomState(0).rand(5, 8)
    np.testing.assert_allclose(parse_emotion(probs), probs.astype(np.float32))
    assert len(EMOTION_LABELS) == 8 and EMOTION_LABELS[4] == "neutral"


@pytest.mark.parametrize(
    "bad", [8, -1, "joy", [3, 9], [[1], [8]], np.zeros((4, 7)), np.zeros(8), [], True, 2.5, None]
)
def test_bad_emotion(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"0=angry, 1=disgust, .*7=contempt"):
        parse_emotion(bad)  # type: ignore[arg-type]


def test_setup_errors() -> None:
    sc = np.zeros(63, np.float32)
    builder = ConditionBuilder()
    with pytest.raises(ConfigError, match="setup"):
        builder(np.zeros((80, 1024), np.float32), 0)
    with pytest.raises(InputError, match="eye_open must be rows of 2"):
        builder.setup(sc=sc, eye_open=np.zeros((3, 3)), eye_ball=np.zeros((1, 6)), emotion=4)
    with pytest.raises(InputError, match="eye_ball is empty"):
        builder.setup(sc=sc, eye_open=np.zeros((1, 2)), eye_ball=[], emotion=4)
    with pytest.raises(InputError, match="sc must hold"):
        builder.setup(sc=np.zeros(62), eye_open=np.zeros((1, 2)), eye_ball=np.zeros((1, 6)), emotion=4)
    with pytest.raises(ConfigError, match="no emotion"):
        builder.setup(sc=sc, eye_open=np.zeros((1, 2)), eye_ball=np.zeros((1, 6)), emotion=None)
    # Disabled blocks need no inputs.
    audio_only = ConditionBuilder(ConditionFlags(False, False, False, False))
    audio_only.setup(sc=None, eye_open=None, eye_ball=None, emotion=None)
    feats = np.ones((80, 1024), np.float32)
    np.testing.assert_array_equal(audio_only(feats, 0), feats)
    with pytest.raises(InputError, match="aud_feat"):
        audio_only(np.ones(1024, np.float32), 0)
