"""Audio-to-motion windowing: run the LMDM sampler over overlapping windows and stitch the results.

The LMDM generates ``seq_frames`` (80) frames of motion per call. A long clip is covered by windows that start
every ``valid_clip_len = seq_frames - overlap_v2`` frames; each new window is cross-faded into the running
sequence, the seam is smoothed, and the motion ``overlap_v2`` frames before the end becomes the next window's
``kp_cond`` (the frame the LMDM continues from). This is the reference ``Audio2Motion`` driven as
``StreamSDK._audio2motion_offline``; the sampler is injected, so the same code runs with the PyTorch LMDM,
an exported engine, or a stub in tests.

Frame bookkeeping, with L = length of the running sequence before a window is added, S = seq_frames,
V = valid_clip_len, O = overlap_v2, F = fuse length (O offline, min(O, V) online):

    ===========================  =====================================================================
    step                         frames touched
    ===========================  =====================================================================
    fuse  (``fuse_window``)      running[L-F : L] = running * (1 - a) + window[O-F : O] * a,
                                 a = arange(F) / F; then window[O:] (V frames) is appended
    smooth (``smooth_motion_``)  first window: [0, S); later: [L-F, L] (inclusive)
    next kp_cond                 running[L' - O - 1], L' = new length; reset to the source motion after
                                 every ``fix_kp_cond``-th window when fix_kp_cond > 0
    ===========================  =====================================================================

Motion is kept as a small numpy ``(L, 265)`` float32 array (the reference does the same math in numpy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ditto_research.errors import ConfigError, InputError
from ditto_research.motion.format import MOTION_LAYOUT

__all__ = [
    "Audio2MotionSettings",
    "ConditionSource",
    "FuseMode",
    "MotionWindowState",
    "WindowSampler",
    "fuse_window",
    "generate_motion",
    "generate_motion_offline",
    "pad_window",
    "smooth_motion_",
    "window_starts",
]

FuseMode = Literal["offline", "online"]

WindowSampler = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | np.ndarray"]
"""``sample_window(kp_cond (1, 265), aud_cond (1, S, D)) -> motion (1, S, 265)``: one LMDM sampling run."""

ConditionSource = Callable[[int], "torch.Tensor | np.ndarray"]
"""``cond_for_window(start_frame) -> (S, D)``: the condition rows of the window starting at that frame."""


@dataclass(frozen=True)
class Audio2MotionSettings:
    """Windowing knobs (the reference ``Audio2Motion.setup`` arguments, same names).

    Attributes:
        seq_frames: frames per LMDM window (the model's ``seq_frames``, 80).
        overlap_v2: frames shared by consecutive windows; 0 <= overlap_v2 < seq_frames.
        fix_kp_cond: 0 keeps chaining kp_cond from the generated motion; k > 0 resets it to the source
            motion after every k-th window.
        fix_kp_cond_dim: (start, stop) columns that a reset still takes from the generated motion.
        smo_k_d: temporal smoothing kernel in frames (<= 1: off); covers ``2 * (smo_k_d // 2) + 1`` frames.
        fuse_mode: "offline" blends the last overlap_v2 frames; "online" only min(overlap_v2, valid_clip_len).
    """

    seq_frames: int = 80
    overlap_v2: int = 10
    fix_kp_cond: int = 0
    fix_kp_cond_dim: tuple[int, int] | None = None
    smo_k_d: int = 3
    fuse_mode: FuseMode = "offline"

    def __post_init__(self) -> None:
        if self.seq_frames < 1:
            raise ConfigError(f"seq_frames must be >= 1, got {self.seq_frames}")
        if not 0 <= self.overlap_v2 < self.seq_frames:
            raise ConfigError(
                f"overlap_v2 must be in [0, seq_frames={self.seq_frames}), got {self.overlap_v2}; "
                "each window must add at least one new frame"
            )
        if self.fix_kp_cond < 0:
            raise ConfigError(
                f"fix_kp_cond must be 0 (never reset) or a positive period, got {self.fix_kp_cond}"
            )
        if self.fix_kp_cond_dim is not None:
            start, stop = self.fix_kp_cond_dim
            if not 0 <= start < stop <= MOTION_LAYOUT.motion_dim:
                raise ConfigError(
                    f"fix_kp_cond_dim must be (start, stop) with 0 <= start < stop <= "
                    f"{MOTION_LAYOUT.motion_dim}, got {self.fix_kp_cond_dim}"
                )
        if self.smo_k_d < 0:
            raise ConfigError(f"smo_k_d must be >= 0 (0 or 1 turns smoothing off), got {self.smo_k_d}")
        if self.fuse_mode not in ("offline", "online"):
            raise ConfigError(f"fuse_mode must be 'offline' or 'online', got {self.fuse_mode!r}")

    @property
    def valid_clip_len(self) -> int:
        """New frames each window after the first adds (and the stride between window starts)."""
        return self.seq_frames - self.overlap_v2

    @property
    def fuse_length(self) -> int:
        """Frames cross-faded at each seam."""
        if self.fuse_mode == "online":
            return min(self.overlap_v2, self.valid_clip_len)
        return self.overlap_v2


# ---- small steps (shared with the online driver) ---------------------------------------------------


def window_starts(num_frames: int, settings: Audio2MotionSettings) -> range:
    """First frame of every window that covers ``num_frames`` frames (offline)."""
    return range(0, num_frames, settings.valid_clip_len)


def pad_window(rows: torch.Tensor, seq_frames: int) -> torch.Tensor:
    """Pad (n, D) rows, 1 <= n <= seq_frames, to (seq_frames, D) by repeating the last row."""
    missing = seq_frames - rows.shape[0]
    if missing <= 0:
        return rows
    return torch.cat([rows, rows[-1:].expand(missing, -1)], dim=0)


def fuse_window(motion: np.ndarray, window: np.ndarray, settings: Audio2MotionSettings) -> np.ndarray:
    """Cross-fade a new window into the running motion and append its new frames.

    Args:
        motion: (L, D) running motion; its last ``fuse_length`` rows are blended in place.
        window: (S, D) freshly sampled window.
    Returns:
        (L + valid_clip_len, D) motion.
    """
    fuse = settings.fuse_length
    seam = settings.overlap_v2  # window frames before this index repeat frames already in `motion`
    if fuse > 0:
        alpha = (np.arange(fuse, dtype=np.float32) / fuse)[:, None]  # weight on the new window, from 0
        tail = motion[motion.shape[0] - fuse :]
        motion[motion.shape[0] - fuse :] = tail * (1 - alpha) + window[seam - fuse : seam] * alpha
    return np.concatenate([motion, window[seam:]], axis=0)


def smooth_motion_(motion: np.ndarray, start: int, stop: int, kernel: int) -> np.ndarray:
    """Moving-average frames [start, stop) in place over the pose columns (scale..t); exp is left alone.

    Each frame becomes the mean of the frames within ``kernel // 2`` of it (clipped at the sequence ends),
    read from the values before this pass. Summation order matches the reference's ``np.mean``.

    Args:
        motion: (L, D) float array, modified in place and returned.
    """
    half = kernel // 2
    if kernel <= 1 or start >= stop:
        return motion
    n, cols = motion.shape[0], MOTION_LAYOUT.pose_dim
    frames = np.arange(start, stop)
    read_lo = max(0, start - half)
    before = motion[read_lo : min(n, stop + half), :cols].copy()
    total = np.zeros((stop - start, cols), dtype=motion.dtype)
    count = np.zeros((stop - start, 1), dtype=motion.dtype)
    for offset in range(-half, half + 1):
        source = frames + offset
        inside = (source >= 0) & (source < n)
        total[inside] += before[source[inside] - read_lo]
        count[inside] += 1
    motion[start:stop, :cols] = total / count
    return motion


class MotionWindowState:
    """The running motion and the next window's kp_cond (the reference ``Audio2Motion`` state, explicit).

    Usage per window: ``sample(state.kp_cond, cond)`` -> ``state.add_window(window)``.
    """

    def __init__(self, source_motion: np.ndarray, settings: Audio2MotionSettings) -> None:
        """
        Args:
            source_motion: (265,) or (1, 265) source motion (``source_motion_vector(x_s_info)``).
        """
        source = np.asarray(source_motion, dtype=np.float32).reshape(-1)
        if source.shape[0] != MOTION_LAYOUT.motion_dim:
            raise InputError(
                f"source motion has {source.shape[0]} values, expected {MOTION_LAYOUT.motion_dim} "
                "(use source_motion_vector(x_s_info))"
            )
        self.settings = settings
        self._source = source
        self.kp_cond: np.ndarray = source.copy()
        """(265,) the kp_cond for the next window."""
        self.motion: np.ndarray | None = None
        """(L, 265) running motion, None before the first window."""
        self.num_windows = 0

    def add_window(self, window: np.ndarray) -> np.ndarray:
        """Fuse and smooth a sampled (S, 265) window into the running motion, then update kp_cond.

        Returns:
            (L, 265) running motion (L = S after the first window, + valid_clip_len after each later one).
        """
        s = self.settings
        if window.shape != (s.seq_frames, MOTION_LAYOUT.motion_dim):
            raise ConfigError(
                f"sampled window has shape {window.shape}; "
                f"expected ({s.seq_frames}, {MOTION_LAYOUT.motion_dim}) "
                "(does the LMDM's seq_frames match the settings?)"
            )
        if self.motion is None:
            motion = np.array(window, dtype=np.float32)
            smooth_motion_(motion, 0, motion.shape[0], s.smo_k_d)
        else:
            seam_end = self.motion.shape[0]
            motion = fuse_window(self.motion, window, s)
            smooth_motion_(motion, seam_end - s.fuse_length, seam_end + 1, s.smo_k_d)
        self.motion = motion
        self.num_windows += 1
        self.kp_cond = self._next_kp_cond(motion)
        return motion

    def _next_kp_cond(self, motion: np.ndarray) -> np.ndarray:
        s = self.settings
        chained = motion[motion.shape[0] - s.overlap_v2 - 1]
        if s.fix_kp_cond == 0 or self.num_windows % s.fix_kp_cond != 0:
            return chained.copy()
        reset = self._source.copy()
        if s.fix_kp_cond_dim is not None:
            start, stop = s.fix_kp_cond_dim
            reset[start:stop] = chained[start:stop]
        return reset

    def keep_last(self, num_frames: int) -> int:
        """Drop all but the last ``num_frames`` frames of the running motion (online memory bound).

        Returns:
            How many frames were dropped from the front.
        """
        if self.motion is None or self.motion.shape[0] <= num_frames:
            return 0
        dropped = self.motion.shape[0] - num_frames
        self.motion = self.motion[dropped:].copy()
        return dropped


# ---- offline driver ----------------------------------------------------------------------------------


def _sample(
    sample_window: WindowSampler, kp_cond: np.ndarray, cond: torch.Tensor, settings: Audio2MotionSettings
) -> np.ndarray:
    """Run the sampler on one window: (265,) kp_cond, (S, D) cond -> (S, 265) float32 numpy."""
    kp = torch.from_numpy(kp_cond[None].copy()).to(cond.device)
    out = sample_window(kp, cond[None])
    if isinstance(out, torch.Tensor):
        out_np = out.detach().float().cpu().numpy()
    else:
        out_np = np.asarray(out, dtype=np.float32)
    expected = (1, settings.seq_frames, MOTION_LAYOUT.motion_dim)
    if out_np.shape != expected:
        raise ConfigError(f"sample_window returned shape {out_np.shape}; expected {expected}")
    return out_np[0]


def generate_motion(
    num_frames: int,
    cond_for_window: ConditionSource,
    sample_window: WindowSampler,
    source_motion: np.ndarray,
    settings: Audio2MotionSettings,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Generate ``num_frames`` frames of motion window by window (the reference offline driver).

    Args:
        num_frames: N >= 1 output frames.
        cond_for_window: start frame -> (S, D) conditions of that window, already padded to S rows.
        sample_window: the LMDM sampler, ``(kp_cond (1, 265), cond (1, S, D)) -> (1, S, 265)``.
        source_motion: (265,) source motion; the first kp_cond and the fix_kp_cond reset value.
        device: where the sampler's input tensors go (default: the conditions' device).
    Returns:
        (N, 265) float32 motion (scale stored as scale - 1), trimmed and smoothed over the whole sequence.
    """
    if num_frames < 1:
        raise InputError(f"audio-to-motion needs at least one frame of conditions, got {num_frames}")
    state = MotionWindowState(source_motion, settings)
    for start in window_starts(num_frames, settings):
        cond = torch.as_tensor(cond_for_window(start))
        if device is not None:
            cond = cond.to(device)
        if cond.ndim != 2 or cond.shape[0] != settings.seq_frames:
            raise InputError(
                f"conditions of the window at frame {start} have shape {tuple(cond.shape)}; "
                f"expected ({settings.seq_frames}, D)"
            )
        state.add_window(_sample(sample_window, state.kp_cond, cond, settings))
    assert state.motion is not None  # num_frames >= 1 gives at least one window
    motion = state.motion[:num_frames].copy()
    return smooth_motion_(motion, 0, num_frames, settings.smo_k_d)


def generate_motion_offline(
    aud_cond_all: torch.Tensor | np.ndarray,
    sample_window: WindowSampler,
    source_motion: np.ndarray,
    settings: Audio2MotionSettings,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Motion for precomputed per-frame conditions; the last window repeats its last row as padding.

    Args:
        aud_cond_all: (N, D) conditions of every frame (ConditionHandler output for the whole clip).
    Returns:
        (N, 265) float32 motion, as :func:`generate_motion`.
    """
    conds = torch.as_tensor(aud_cond_all, device=device)
    if conds.ndim != 2:
        raise InputError(f"aud_cond_all must be (N, D), got shape {tuple(conds.shape)}")
    seq_frames = settings.seq_frames

    def cond_for_window(start: int) -> torch.Tensor:
        return pad_window(conds[start : start + seq_frames], seq_frames)

    return generate_motion(conds.shape[0], cond_for_window, sample_window, source_motion, settings)
