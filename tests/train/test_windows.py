"""TrainingWindows against the released training code's own items (``train_dataset.npz``)."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_research.constants import MOTION_DIM
from ditto_research.data import PreparedClip, TrainingWindows
from ditto_research.errors import InputError
from ditto_research.motion.conditions import ConditionFlags


def golden_clips(g: dict[str, np.ndarray]) -> list[PreparedClip]:
    """The golden's packed per-clip arrays (mtn = 265 motion + 63 canonical keypoints) as prepared clips."""
    clips = []
    for i in range(len(g["lengths"])):
        mtn = g[f"clip{i}_mtn"]
        arrays = {
            "motion": mtn[:, :MOTION_DIM],
            "canonical_kp": mtn[:, MOTION_DIM:],
            "audio_features": g[f"clip{i}_aud"],
            "emotion": g[f"clip{i}_emo"],
            "eye_open": g[f"clip{i}_eye_open"],
            "eye_ball": g[f"clip{i}_eye_ball"],
        }
        clips.append(PreparedClip(f"clip{i}", arrays))
    return clips


@pytest.fixture(scope="module")
def golden(load_golden) -> dict[str, np.ndarray]:
    return load_golden("train_dataset")


def test_golden_items_bit_for_bit(golden):
    """Index space, windows, previous frame, every condition block and the random source-keypoint frame drawn
    from the same seeded random source, item for item."""
    seq_frames = golden["kp_seq"].shape[1]
    windows = TrainingWindows(golden_clips(golden), seq_frames=seq_frames, seed=int(golden["seed"]))
    assert len(windows) == int(golden["num_items"]) == sum(int(n) - seq_frames for n in golden["lengths"])
    assert windows.cond_dim == golden["aud_cond"].shape[2]
    for j, index in enumerate(golden["idx"].tolist()):
        item = windows[index]
        assert (item["clip"], item["frame"]) == (golden["v_idx"][j], golden["f_idx"][j])
        assert item["sc_frame"] == golden["sc_frame"][j]
        for key in ("kp_seq", "kp_cond", "aud_cond"):
            assert item[key].dtype == np.float32
            np.testing.assert_array_equal(item[key], golden[key][j], err_msg=f"item {index}: {key}")


def test_golden_clips_a_given_source_frame_and_the_condition_blocks(golden):
    clips = golden_clips(golden)
    windows = TrainingWindows(clips, seed=0)
    item = windows.item(5, sc_frame=7)
    sc = np.repeat(clips[0]["canonical_kp"][7][None], 80, 0)
    np.testing.assert_array_equal(item["aud_cond"][:, -63:], sc)
    no_sc = TrainingWindows(clips, flags=ConditionFlags(use_sc=False, use_emo=False))
    assert no_sc.cond_dim == no_sc[0]["aud_cond"].shape[1] == 1024 + 2 + 6
    assert windows.locate(len(windows) - 1) == (2, 1)  # the 81-frame clip gives one item
    with pytest.raises(IndexError, match="out of range"):
        windows.locate(len(windows))


def test_clips_too_short_for_one_window_are_refused_in_one_line(golden):
    short = [clip for clip in golden_clips(golden) if clip.frames <= 81][:1]
    with pytest.raises(InputError, match=r"no clip is longer than 90 frames \(longest: 81\)"):
        TrainingWindows(short, seq_frames=90)
