"""The training items of the motion model: 80-frame windows of prepared clips with their LMDM conditions.

The released training code's ``Stage2Dataset.getitem``, item for item (``train_dataset.npz`` holds its
output): the index space is every clip, every start frame ``f`` in ``[1, n - seq_frames]``, clip-major (a
clip of ``n`` frames gives ``n - seq_frames`` items; the first frame only ever serves as a previous frame).
Item ``(clip, f)``:

- ``kp_seq`` (S, 265): the motion of frames ``f .. f + S - 1``, what the model learns to generate;
- ``kp_cond`` (265,): the motion of frame ``f - 1``, the previous frame it continues from;
- ``aud_cond`` (S, C): per frame, the audio features | the window's MEAN emotion (the same row for all S) |
  eye_open | eye_ball flattened to 6 | the canonical keypoints of a random frame ``r`` of the clip (the same
  row for all S; ``sc_frame``). C = 1103 with every block on; the blocks follow
  :class:`~ditto_research.motion.conditions.ConditionFlags` like inference's conditions.

``r`` is drawn per item from this object's ``random.Random(seed)`` (one ``randint(0, n - 1)`` per item, in the
order items are asked for: the original's draw), or given.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from ditto_research.data.clip import PreparedClip
from ditto_research.errors import InputError
from ditto_research.motion.conditions import ConditionFlags, cond_dim

__all__ = ["TrainingWindows"]

_ALL_BLOCKS = ConditionFlags()


class TrainingWindows:
    """Training items over ``clips`` (a :class:`~ditto_research.data.PreparedDataset` or a sequence of
    :class:`~ditto_research.data.PreparedClip`; loaded once, held in memory as the original does).

    Args:
        seq_frames: window length (the LMDM's, 80).
        seed: seeds the random source-keypoint frame of each item.
        flags: which condition blocks follow the audio features (all on, as the checkpoint was trained).
    """

    def __init__(
        self,
        clips: Sequence[PreparedClip],
        seq_frames: int = 80,
        seed: int = 0,
        flags: ConditionFlags = _ALL_BLOCKS,
    ) -> None:
        if seq_frames < 1:
            raise InputError(f"seq_frames={seq_frames} must be >= 1")
        self.clips = list(clips)
        self.seq_frames = seq_frames
        self.flags = flags
        self.rng = random.Random(seed)
        counts = [max(0, clip.frames - seq_frames) for clip in self.clips]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if self._starts[-1] == 0:
            longest = max((clip.frames for clip in self.clips), default=0)
            raise InputError(
                f"no clip is longer than {seq_frames} frames (longest: {longest}); a training window needs "
                f"{seq_frames + 1} frames of one clip"
            )

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def cond_dim(self) -> int:
        return cond_dim(self.flags)

    def locate(self, index: int) -> tuple[int, int]:
        """``(clip index, start frame f)`` of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range 0..{len(self) - 1}")
        clip = int(np.searchsorted(self._starts, index, side="right") - 1)
        return clip, int(index - self._starts[clip]) + 1

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(index)

    def item(self, index: int, sc_frame: int | None = None) -> dict[str, Any]:
        """Item ``index`` as a dict of ``kp_seq``, ``kp_cond``, ``aud_cond`` (float32) and ``clip``,
        ``frame``, ``sc_frame`` (ints); ``sc_frame`` None draws it."""
        v, f = self.locate(index)
        clip = self.clips[v]
        s = self.seq_frames
        if sc_frame is None:
            sc_frame = self.rng.randint(0, clip.frames - 1)
        motion = clip["motion"]
        blocks = [clip["audio_features"][f : f + s]]
        if self.flags.use_emo:
            blocks.append(np.repeat(clip["emotion"][f : f + s].mean(axis=0, keepdims=True), s, axis=0))
        if self.flags.use_eye_open:
            blocks.append(clip["eye_open"][f : f + s])
        if self.flags.use_eye_ball:
            blocks.append(clip["eye_ball"][f : f + s].reshape(s, -1))
        if self.flags.use_sc:
            blocks.append(np.repeat(clip["canonical_kp"][sc_frame][None], s, axis=0))
        return {
            "kp_seq": motion[f : f + s],
            "kp_cond": motion[f - 1],
            "aud_cond": np.concatenate(blocks, axis=1).astype(np.float32, copy=False),
            "clip": v,
            "frame": f,
            "sc_frame": sc_frame,
        }
