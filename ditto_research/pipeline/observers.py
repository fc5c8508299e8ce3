"""Watching a run without changing it: observers of every boundary of the pipeline and of stage timings.

A session (offline, online, server, evaluation) takes a list of observers and hands it to the engine's stages
and to the runner; an observer implements the hooks it cares about (the others are no-ops)::

    timer, motion = StageTimer(), MotionRecorder()
    session.generate("face.png", "speech.wav", "out.mp4", observers=[timer, motion])
    timer.ms_per_frame(result.frames), motion.array()

The hooks, in pipeline order (``index`` is the output frame unless said otherwise):

====================  ==============================================================================
``on_source_frame``   registration of source frame ``index``: landmarks, crop, matrices, x_s_info, eyes
``on_conditions``     LMDM condition rows (n, C) of frames ``start ..`` (offline: the whole clip at once)
``on_motion_window``  one LMDM sampling: kp_cond (1, 265) and the window's motion (S, 265), unfused
``on_motion``         the generated (265,) motion row of a frame (fused, smoothed, clipped)
``on_keypoints``      the stitched keypoints x_s, x_d (1, 21, 3) that drive the warp
``on_warp``           the warped feature (1, 256, 64, 64), a tensor on the run's device
``on_render``         the decoded (512, 512, 3) float32 image in [0, 255], before paste-back
``on_stage_call``     one ``process`` call of a stage and its wall time
====================  ==============================================================================

Hooks are called on the thread of the stage that produced the event, so implementations must be cheap and
thread-safe (the ones here take a lock); arrays are the pipeline's own: copy what you keep.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ditto_research.constants import MOTION_DIM
from ditto_research.pipeline.latency import RingBuffer

if TYPE_CHECKING:
    from ditto_research.pipeline.registration import RegistrationRecord


class PipelineObserver:
    """Base class: every hook is a no-op."""

    def on_source_frame(self, index: int, record: RegistrationRecord) -> None:
        """Source frame ``index`` was registered (the registering thread)."""

    def on_conditions(self, start: int, cond: np.ndarray) -> None:
        """(n, C) LMDM conditions of frames ``start .. start + n - 1`` (frames < 0: the online prefix)."""

    def on_motion_window(self, window: int, kp_cond: np.ndarray, motion: np.ndarray) -> None:
        """LMDM window ``window`` (0, 1, ..): its (1, 265) kp_cond and sampled (S, 265) motion."""

    def on_motion(self, index: int, motion: np.ndarray) -> None:
        """Generated (265,) motion row of output frame ``index`` (the motion stage's thread)."""

    def on_keypoints(self, index: int, x_s: np.ndarray, x_d: np.ndarray) -> None:
        """Source and driving keypoints (1, 21, 3) of frame ``index`` after stitching."""

    def on_warp(self, index: int, feature: torch.Tensor) -> None:
        """Warped feature (1, 256, 64, 64) of frame ``index``, on the run's device."""

    def on_render(self, index: int, image: np.ndarray) -> None:
        """Decoded (512, 512, 3) float32 image in [0, 255] of frame ``index``, before paste-back."""

    def on_stage_call(self, stage: str, seconds: float) -> None:
        """One ``process`` call of ``stage`` took ``seconds`` of wall time (that stage's thread)."""


def notify(observers: Iterable[PipelineObserver], hook: str, *args: Any) -> None:
    """Call ``hook`` of every observer with ``args``."""
    for observer in observers:
        getattr(observer, hook)(*args)


def observed_window_sampler(sample_window: Any, observers: Iterable[PipelineObserver]) -> Any:
    """``sample_window`` reporting each call to ``on_motion_window`` (its attributes, e.g. ``plan``, kept)."""
    observers = tuple(observers)
    return _ObservedSampler(sample_window, observers)


class _ObservedSampler:
    def __init__(self, sample_window: Any, observers: tuple[PipelineObserver, ...]) -> None:
        self._inner, self._observers, self._count = sample_window, observers, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, kp_cond: torch.Tensor, cond: torch.Tensor) -> Any:
        out = self._inner(kp_cond, cond)
        motion = out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        kp = kp_cond.detach().float().cpu().numpy()
        notify(self._observers, "on_motion_window", self._count, kp, motion[0])
        self._count += 1
        return out


def observed_conditions(
    condition: Callable[[np.ndarray, int], np.ndarray], observers: Iterable[PipelineObserver]
) -> Callable[[np.ndarray, int], np.ndarray]:
    """A condition builder ``(features, start) -> cond`` that reports each result to ``on_conditions``."""
    observers = tuple(observers)

    def build(feats: np.ndarray, start: int) -> np.ndarray:
        cond = condition(feats, start)
        notify(observers, "on_conditions", start, np.asarray(cond))
        return cond

    return build


class StageTimer(PipelineObserver):
    """Per-stage wall time of every ``process`` call: totals, and the last ``keep`` calls for percentiles.

    Memory is allocated up front (ring buffers), so a stream of any length keeps a constant footprint.
    """

    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._calls: dict[str, RingBuffer] = {}

    def on_stage_call(self, stage: str, seconds: float) -> None:
        with self._lock:
            calls = self._calls.get(stage)
            if calls is None:
                calls = self._calls[stage] = RingBuffer(self.keep)
            calls.append(seconds)

    def busy_s(self) -> dict[str, float]:
        """Total busy time of each stage (s), in the order the stages first reported."""
        with self._lock:
            return {name: calls.total for name, calls in self._calls.items()}

    def ms_per_frame(self, frames: int) -> dict[str, float]:
        """Busy time of each stage divided by ``frames`` (ms)."""
        return {name: 1000.0 * total / max(frames, 1) for name, total in self.busy_s().items()}

    def call_seconds(self) -> dict[str, np.ndarray]:
        """Each stage's busy time per call (s), the last ``keep`` calls, oldest first."""
        with self._lock:
            return {name: calls.values() for name, calls in self._calls.items()}


class MotionRecorder(PipelineObserver):
    """Keeps the generated motion rows of frames ``0 .. num_frames - 1`` (None: every frame, growing)."""

    def __init__(self, num_frames: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, np.ndarray] = {}
        self.num_frames = num_frames

    def on_motion(self, index: int, motion: np.ndarray) -> None:
        if self.num_frames is not None and not 0 <= index < self.num_frames:
            return
        with self._lock:
            self._rows[index] = np.array(motion, dtype=np.float32)

    def array(self) -> np.ndarray:
        """(n, 265) rows of frames 0 .. n-1, n = the first frame not seen (normally all of them)."""
        with self._lock:
            n = 0
            while n in self._rows:
                n += 1
            if n == 0:
                return np.zeros((0, MOTION_DIM), np.float32)
            return np.stack([self._rows[i] for i in range(n)])


def notify_motion(observers: Iterable[PipelineObserver], index: int, motion: np.ndarray) -> None:
    for observer in observers:
        observer.on_motion(index, motion)
