"""Online audio-to-motion: LMDM windows over audio features that arrive a few rows at a time.

This is the reference ``StreamSDK._audio2motion_worker`` of ``stream_pipeline_online.py`` (``online_mode``),
restated over absolute frame indices so it can be fed any number of feature rows at a time and still produce
the same motion:

- The feature buffer starts with ``O = overlap_v2`` rows: the offline features of ``O * 640`` samples of
  silence (computed by the caller with chunksize (3, 5, 2), as the reference does whatever the run's
  chunksize). Buffer row ``b`` is audio frame ``b - O``; conditions of a window starting at row ``k`` are
  built with frame index ``k - O`` (negative for the first window, see
  :class:`~ditto_research.motion.conditions.ConditionBuilder`).
- Windows start at rows 0, V, 2V, ... (``V = valid_clip_len = S - O``) and run once their ``S`` rows are in
  the buffer. At the end of the audio the first window that does not fit is padded by repeating its last row;
  it is the final window.
- Windows are fused with the online fuse length ``F = min(O, V)`` and smoothed
  (:class:`~ditto_research.motion.audio2motion.MotionWindowState`, ``fuse_mode="online"``).
- ``d0`` (the relative-motion reference of the stitcher) is frame 0 of the first window, clipped.
- After a window the running motion has ``L`` rows; rows ``< L - F`` can no longer change and are emitted.

Which frames come out (the one deliberate difference): the reference starts emitting at row ``S - F``. That is
row ``O`` (audio frame 0) when ``O >= V`` (the online configuration), but row ``V`` when ``O < V``: it then
drops audio frames ``0 .. V - O - 1`` and shifts the video against the audio. At the end it emits whole
windows into the padding, a few frames more than the audio lasts. Here emission always starts at audio frame 0
and stops after frame ``N - 1``, with ``N = ceil(samples / 16000 * 25)`` as offline, so the online video has
the offline frame count and stays in sync. The motion of every emitted frame is the reference's value for that
row.

Memory is bounded: the running motion keeps its last ``2 * S`` rows (as the reference) and the feature buffer
only the rows of windows not yet run.

The pipeline runs it in :class:`~ditto_research.pipeline.stages.OnlineMotionStage` (this module knows
nothing of stages or threads).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ditto_research.errors import ConfigError, InputError
from ditto_research.motion.audio2motion import Audio2MotionSettings, MotionWindowState, WindowSampler
from ditto_research.motion.format import MOTION_LAYOUT, clip_motion

__all__ = ["ConditionFn", "OnlineMotionGenerator", "REFERENCE_PREFIX_CHUNKSIZE"]


ConditionFn = Callable[[np.ndarray, int], np.ndarray]
"""``condition(aud_feat (S, D), first_frame_index) -> (S, cond_dim)`` (a ConditionBuilder)."""

REFERENCE_PREFIX_CHUNKSIZE = (3, 5, 2)
"""The chunksize of the silent prefix features (the reference's ``wav2feat`` default, whatever the run
uses)."""


class OnlineMotionGenerator:
    """Incremental online audio-to-motion; the same rows in give the same motion whatever their grouping.

    Usage: ``push(rows)`` as feature rows arrive (returns newly final frames), then ``finish(num_frames)``.

    Args:
        sample_window: LMDM sampler, ``(kp_cond (1, 265), cond (1, S, C)) -> (1, S, 265)``.
        condition: builds the ``(S, C)`` conditions of a window from its ``(S, D)`` features and first frame.
        source_motion: (265,) source motion (first kp_cond).
        settings: windowing; ``fuse_mode`` must be "online".
        prefix_features: ``(O, D)`` features of ``O * 640`` samples of silence.
        value_range: optional (2, 265) clip range applied to emitted frames and ``d0``
            (``v_min_max_for_clip``).
        device: device of the sampler inputs.
    """

    def __init__(
        self,
        sample_window: WindowSampler,
        condition: ConditionFn,
        source_motion: np.ndarray,
        settings: Audio2MotionSettings,
        prefix_features: np.ndarray,
        value_range: np.ndarray | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if settings.fuse_mode != "online":
            raise ConfigError("OnlineMotionGenerator needs Audio2MotionSettings(fuse_mode='online')")
        prefix = np.asarray(prefix_features, dtype=np.float32)
        if prefix.ndim != 2 or prefix.shape[0] != settings.overlap_v2:
            raise InputError(
                f"prefix_features must be ({settings.overlap_v2}, D) silence features (one row per "
                f"overlap_v2 frame), got shape {prefix.shape}"
            )
        self.settings = settings
        self.sample_window = sample_window
        self.condition = condition
        self.value_range = value_range
        self.device = device
        self.state = MotionWindowState(source_motion, settings)
        self.d0: np.ndarray | None = None
        """(265,) clipped first generated frame, set by the first window."""
        self.num_windows = 0
        self.finished = False
        self._feat = prefix  # buffer rows [_feat_start, _num_rows)
        self._feat_start = 0
        self._num_rows = prefix.shape[0]
        self._next_window = 0  # buffer row where the next window starts
        self._motion_start = 0  # buffer row of state.motion[0]
        self._next_emit = settings.overlap_v2  # buffer row of the next frame to emit (audio frame 0)

    @property
    def lead_rows(self) -> int:
        """Buffer rows before audio frame 0 (``overlap_v2``)."""
        return self.settings.overlap_v2

    @property
    def frames_emitted(self) -> int:
        return self._next_emit - self.lead_rows

    def push(self, rows: np.ndarray) -> list[np.ndarray]:
        """Add ``(n, D)`` feature rows of frames whose audio has arrived; run every window they complete.

        Returns:
            The newly final frames in order, each a (265,) float32 row (clipped), frame index
            ``frames_emitted`` before the call onwards.
        """
        return self._add(rows, limit=None)

    def finish(self, num_frames: int, rows: np.ndarray | None = None) -> list[np.ndarray]:
        """End of audio: add the tail ``rows`` (features of the zero-padded last chunks), run the padded final
        window if a frame below ``num_frames`` still needs it, and return the frames up to frame N - 1.

        Args:
            num_frames: N, the video frames of the whole audio (``ceil(samples / 16000 * 25)``).
            rows: (n, D) tail feature rows; no frame beyond N - 1 is emitted from them.
        """
        end = self.lead_rows + max(int(num_frames), 0)
        emitted = [] if rows is None else self._add(rows, limit=end)
        self.finished = True
        # Frames up to L - F are out already; the padded window is only needed for frames beyond.
        if end > self._next_emit and self._next_window < self._num_rows:
            self._run_window(self._feat_rows(self._next_window, self._num_rows - self._next_window))
        if end > self._next_emit and end > self._motion_end():  # frames are missing (none: no audio at all)
            raise InputError(
                f"{num_frames} frames were asked for but the features cover "
                f"{self._motion_end() - self.lead_rows}; num_frames must be the frame count of the audio "
                "that produced the features"
            )
        return emitted + self._emit_until(end)

    # ---- internals ---------------------------------------------------------------------------------------

    def _add(self, rows: np.ndarray, limit: int | None) -> list[np.ndarray]:
        """Append rows, run the complete windows, emit final frames (below buffer row ``limit`` if given)."""
        if self.finished:
            raise InputError("feature rows pushed after finish(); start a new OnlineMotionGenerator")
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self._feat.shape[1]:
            raise InputError(f"feature rows must be (n, {self._feat.shape[1]}), got shape {rows.shape}")
        self._feat = np.concatenate([self._feat, rows], axis=0)
        self._num_rows += rows.shape[0]
        seq = self.settings.seq_frames
        emitted: list[np.ndarray] = []
        while self._next_window + seq <= self._num_rows:
            if limit is not None and self._next_emit >= limit:
                break  # the tail: nothing more is needed
            self._run_window(self._feat_rows(self._next_window, seq))
            final = self._motion_end() - self.settings.fuse_length
            emitted += self._emit_until(final if limit is None else min(final, limit))
            self._motion_start += self.state.keep_last(2 * seq)
        self._drop_used_rows()
        return emitted

    def _motion_end(self) -> int:
        """Buffer row just past the running motion (0 before the first window)."""
        return self._motion_start + (0 if self.state.motion is None else self.state.motion.shape[0])

    def _feat_rows(self, start: int, count: int) -> np.ndarray:
        offset = start - self._feat_start
        return self._feat[offset : offset + count]

    def _run_window(self, feats: np.ndarray) -> None:
        """Sample the window at ``_next_window`` from its (n <= S, D) features (n < S: padded, final)."""
        seq = self.settings.seq_frames
        if feats.shape[0] < seq:
            feats = np.concatenate([feats, np.repeat(feats[-1:], seq - feats.shape[0], axis=0)], axis=0)
        cond = torch.as_tensor(np.asarray(self.condition(feats, self._next_window - self.lead_rows)))
        kp_cond = torch.from_numpy(self.state.kp_cond[None].copy())
        window = self.sample_window(kp_cond.to(self.device), cond[None].to(self.device))
        window_np = (
            window.detach().float().cpu().numpy() if isinstance(window, torch.Tensor) else np.asarray(window)
        )
        expected = (1, seq, MOTION_LAYOUT.motion_dim)
        if window_np.shape != expected:
            raise ConfigError(f"sample_window returned shape {window_np.shape}; expected {expected}")
        self.state.add_window(window_np[0].astype(np.float32, copy=False))
        if self.num_windows == 0:
            assert self.state.motion is not None
            self.d0 = clip_motion(self.state.motion[:1].copy(), self.value_range)[0]
        self.num_windows += 1
        self._next_window += self.settings.valid_clip_len

    def _drop_used_rows(self) -> None:
        """Forget the feature rows before the next window (no later window reads them)."""
        keep_from = min(self._next_window, self._num_rows)
        if keep_from > self._feat_start:
            self._feat = self._feat[keep_from - self._feat_start :].copy()
            self._feat_start = keep_from

    def _emit_until(self, stop_row: int) -> list[np.ndarray]:
        """Frames of buffer rows [_next_emit, stop_row), clipped; advances _next_emit."""
        if stop_row <= self._next_emit or self.state.motion is None:
            return []
        assert self._next_emit >= self._motion_start, "an unemitted frame was trimmed"
        rows = self.state.motion[self._next_emit - self._motion_start : stop_row - self._motion_start]
        self._next_emit += rows.shape[0]
        clipped = clip_motion(rows.copy(), self.value_range)
        return list(clipped.astype(np.float32, copy=False))
