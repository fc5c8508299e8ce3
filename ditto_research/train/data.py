"""What the trainer reads: a prepared dataset split by video, an endless seeded stream of training windows,
and fixed validation windows.

Every random choice of a training sample — which window, the source-keypoint frame of its condition, the
diffusion time ``t``, the noise and whether its condition is dropped — is a function of ``(seed, position)``,
where ``position`` counts samples from the start of the run (epoch = position // number of windows; each
epoch a seeded permutation). So

- a resumed run reads exactly the samples the uninterrupted run would have (the batch sampler starts at the
  restored step),
- loader workers need no shared random state,
- ``n`` processes of a data-parallel run (rank r takes the r-th slice of each global batch) see the same
  samples, with the same draws, as one process with an ``n`` times larger batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ditto_research.data import PreparedDataset, TrainingWindows
from ditto_research.data.clip import PreparedClip
from ditto_research.errors import ConfigError, InputError
from ditto_research.motion.conditions import ConditionFlags

__all__ = ["PositionBatches", "Split", "WindowStream", "split_by_video", "validation_items"]


@dataclass(frozen=True)
class Split:
    """Clip indices of the dataset on each side, and the videos (groups) held out."""

    train: list[int]
    val: list[int]
    val_groups: list[str]


def _group(entry: dict[str, Any]) -> str:
    """A clip's video: its source, or its id without the mirrored copy's suffix."""
    if entry.get("source_id"):
        return str(entry["source_id"])
    clip_id = str(entry["id"])
    return clip_id[: -len("_flip")] if clip_id.endswith("_flip") else clip_id


def split_by_video(dataset: PreparedDataset, fraction: float, seed: int) -> Split:
    """Hold out ``fraction`` of the videos (at least one when ``fraction`` > 0), chosen by ``seed``: a clip,
    its mirrored copy and the other clips of its video are always on the same side (never split by window).

    Raises:
        InputError: an empty dataset, or one video only while something must be held out.
    """
    if len(dataset) == 0:
        raise InputError(f"dataset {dataset.folder} holds no clips; prepare videos into it first")
    groups = sorted({_group(e) for e in dataset.entries})
    if fraction <= 0:
        return Split(list(range(len(dataset))), [], [])
    if len(groups) < 2:
        raise InputError(
            f"dataset {dataset.folder} holds clips of one video only: nothing can be held out for validation "
            "without leaking it; add videos, or set train.val_fraction=0"
        )
    count = min(max(1, round(fraction * len(groups))), len(groups) - 1)
    order = np.random.default_rng([seed, 7]).permutation(len(groups))
    held = {groups[i] for i in order[:count]}
    train = [i for i, e in enumerate(dataset.entries) if _group(e) not in held]
    val = [i for i, e in enumerate(dataset.entries) if _group(e) in held]
    return Split(train, val, sorted(held))


class WindowStream(Dataset):
    """Training samples by stream position (see the module docstring): ``kp_seq``, ``kp_cond``,
    ``aud_cond`` (the released code's windows) plus the step's draws ``t`` (int64), ``noise`` (S, 265) and
    ``keep`` (bool), all from ``numpy.random.default_rng([seed, position])``."""

    def __init__(
        self,
        clips: Sequence[PreparedClip],
        *,
        seq_frames: int,
        flags: ConditionFlags,
        seed: int,
        num_timesteps: int,
        cond_drop_prob: float,
    ) -> None:
        self.windows = TrainingWindows(clips, seq_frames=seq_frames, flags=flags)
        self.seed = seed
        self.num_timesteps = num_timesteps
        self.cond_drop_prob = cond_drop_prob

    @property
    def num_windows(self) -> int:
        return len(self.windows)

    def __len__(self) -> int:
        return 2**62  # endless: positions come from PositionBatches

    @functools.lru_cache(maxsize=2)  # noqa: B019 - two epochs at a time, per worker
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 1, epoch]).permutation(self.num_windows)

    def __getitem__(self, position: int) -> dict[str, Any]:
        epoch, k = divmod(int(position), self.num_windows)
        index = int(self._order(epoch)[k])
        rng = np.random.default_rng([self.seed, 2, int(position)])
        clip, _ = self.windows.locate(index)
        sc_frame = int(rng.integers(0, self.windows.clips[clip].frames))
        item = self.windows.item(index, sc_frame=sc_frame)
        shape = item["kp_seq"].shape
        return {
            "kp_seq": torch.from_numpy(np.array(item["kp_seq"])),
            "kp_cond": torch.from_numpy(np.array(item["kp_cond"])),
            "aud_cond": torch.from_numpy(item["aud_cond"]),
            "t": torch.tensor(int(rng.integers(0, self.num_timesteps)), dtype=torch.int64),
            "noise": torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)),
            "keep": torch.tensor(bool(rng.random() >= self.cond_drop_prob)),
        }


class PositionBatches(Sampler[list[int]]):
    """Stream positions for each micro-batch of this rank, from optimizer step ``start_step`` to
    ``max_steps``: micro-batch ``m`` (``accumulate`` per step) of rank ``r`` reads
    ``[(m * world + r) * batch, ... + batch)``."""

    def __init__(
        self, batch_size: int, *, accumulate: int, world: int, rank: int, start_step: int, max_steps: int
    ) -> None:
        self.batch_size, self.accumulate, self.world, self.rank = batch_size, accumulate, world, rank
        self.start, self.stop = start_step * accumulate, max_steps * accumulate

    def __iter__(self) -> Iterator[list[int]]:
        for micro in range(self.start, self.stop):
            base = (micro * self.world + self.rank) * self.batch_size
            yield list(range(base, base + self.batch_size))

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


def validation_items(
    clips: Sequence[PreparedClip],
    *,
    count: int,
    seq_frames: int,
    flags: ConditionFlags,
    seed: int,
) -> list[dict[str, np.ndarray]]:
    """``count`` held-out windows spread evenly over the held-out clips' windows, each with a fixed
    source-keypoint frame: the same windows every validation."""
    windows = TrainingWindows(clips, seq_frames=seq_frames, flags=flags)
    picks = np.unique(np.linspace(0, len(windows) - 1, num=min(count, len(windows))).round().astype(int))
    rng = np.random.default_rng([seed, 3])
    items = []
    for index in picks:
        clip, _ = windows.locate(int(index))
        items.append(windows.item(int(index), sc_frame=int(rng.integers(0, windows.clips[clip].frames))))
    return items


def check_windows_fit(clips: Sequence[PreparedClip], seq_frames: int, what: str) -> None:
    """InputError when no clip of ``what`` is long enough for one window (before any training)."""
    longest = max((clip.frames for clip in clips), default=0)
    if longest <= seq_frames:
        raise InputError(
            f"{what}: no clip is longer than {seq_frames} frames (longest {longest}); a training window "
            f"needs {seq_frames + 1} frames of one clip: prepare longer clips"
        )


def steps_per_epoch(num_windows: int, global_batch: int) -> float:
    """Optimizer steps per pass over the windows (for the log)."""
    if global_batch < 1:
        raise ConfigError("the global batch must be >= 1")
    return num_windows / global_batch if num_windows else math.inf
