"""Streaming shot-cut detection: is there a hard cut between the previous frame and this one?

The idea is PySceneDetect's content detector (``ContentDetector``, docs at scenedetect.com): each frame is
shrunk to a small copy (``width`` pixels wide, area resize, aspect kept) and converted to HSV; the score is
the mean absolute difference to the previous frame's copy, averaged over the three channels (the hue
difference taken round the colour circle of OpenCV's 0..179 hue, so a red tint wrapping from 179 to 0 is not
a jump). A cut is a score at or above ``threshold``. Written here (no dependency): the prepare job already
holds every decoded frame, and one resize and a few array operations per frame are all it needs.

Scores measured on ``../shared/real_clips`` (decoded at 25 fps, 64 px copies; 0 = identical frames):

- close-up ``-1wCGAxqT_4+...`` (412x454, 178 frames): largest in-shot score 4.04 (99th percentile 3.50);
- interview ``Clip+WSGW-...`` (1920x1080, 160 frames): largest in-shot score 2.38 (2.46 decoded 480 wide);
- the two clips joined (either order, the second resized to the first's size): 48.8 at the join;
- astronaut -> coffee (``skimage.data``, a hard cut): 67.6;
- the close-up against itself mirrored left-right: 32.9; brightened by +30: 17.5;
- a clip's first frame against its last (same person and framing): 5.7 to 7.0.

Defaults, and why:

- ``threshold=20``: 5x the largest in-shot score measured (4.04) and 2.4x below the cut between the two clips
  (48.8). Lower than PySceneDetect's general-purpose 27 on purpose: for training data a missed cut puts a
  jump inside a training window, while a false cut only splits a clip; a cut between two cameras of one
  studio (same light, same background) scores less than a cut between different people — the mirrored
  close-up (32.9), a stand-in for such an angle change, stays 1.6x above 20.
- ``min_gap_frames=1``: every frame over the threshold starts a shot. PySceneDetect's minimum scene length
  (15 frames) drops a second cut within the gap, which would leave that cut inside the next shot; here a
  short shot is harmless (the prepare job drops shots shorter than ``MIN_FRAMES`` = 81), and a flash frame
  becomes a one-frame shot of its own. Raise it to thin out cuts when only their count matters.

Not detected (by design of a frame-difference score): dissolves and fades (each step is small), and jump cuts
within one shot (same person, same framing: frame 0 against the last frame of a clip scores 5.7-7.0, like
motion). Cost per 1920x1080 frame on one core (``cv2.setNumThreads(1)``): about 1.4 ms for the area resize to
64x36 (memory-bound: it reads the whole frame), then 0.02-0.04 ms for the HSV conversion and the score.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ditto_research.errors import ConfigError, InputError

__all__ = ["DEFAULT_MIN_GAP_FRAMES", "DEFAULT_THRESHOLD", "CutDetector"]

DEFAULT_THRESHOLD = 20.0  # mean HSV change (0..~200) at which a frame starts a new shot; see the module doc
DEFAULT_MIN_GAP_FRAMES = 1  # frames a shot lasts at least before another cut is reported (1: no suppression)
DEFAULT_WIDTH = 64  # width of the small copy the score is computed on, in pixels

_HUE_PERIOD = 180  # OpenCV's uint8 hue runs 0..179


class CutDetector:
    """Feed frames in order with :meth:`update`; it says whether each one starts a new shot.

    State: the previous frame's small HSV copy, the frame count, the index of the last cut and the last score
    (``score``, for logging). One detector per video; :meth:`reset` starts over.
    """

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        min_gap_frames: int = DEFAULT_MIN_GAP_FRAMES,
        width: int = DEFAULT_WIDTH,
    ) -> None:
        """
        Args:
            threshold: score (mean absolute HSV difference of consecutive small copies) at or above which a
                frame starts a new shot; > 0.
            min_gap_frames: a cut is reported only if the shot it ends has at least this many frames (>= 1;
                1 reports every cut).
            width: width in pixels of the small copy the score is computed on (>= 8).
        """
        if not threshold > 0:
            raise ConfigError(
                f"cut threshold must be > 0 (got {threshold}); the default is {DEFAULT_THRESHOLD}"
            )
        if min_gap_frames < 1:
            raise ConfigError(f"min_gap_frames must be >= 1 (got {min_gap_frames}); 1 reports every cut")
        if width < 8:
            raise ConfigError(f"cut detection width must be >= 8 pixels (got {width}); the default is 64")
        self.threshold = float(threshold)
        self.min_gap_frames = int(min_gap_frames)
        self.width = int(width)
        self.reset()

    def reset(self) -> None:
        """Forget every frame seen (the next frame is a first frame)."""
        self._previous: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None
        self.frames = 0  # frames seen
        self.last_cut = 0  # index of the frame that started the current shot
        self.score = 0.0  # score of the last frame against the one before it (0.0 for a first frame)

    def update(self, rgb: np.ndarray) -> bool:
        """Whether ``rgb`` ((H, W, 3) uint8 RGB) starts a new shot: a cut lies between the previous frame
        and this one. The first frame returns False. A frame whose size differs from the previous one's
        counts as a cut (``score`` is ``inf``)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(
                f"cut detection needs (H, W, 3) uint8 RGB frames (got shape {rgb.shape}, {rgb.dtype})"
            )
        small = self._small_hsv(rgb)
        index = self.frames
        self.frames += 1
        previous, same_size = self._previous, self._shape == rgb.shape
        self._previous, self._shape = small, rgb.shape
        if previous is None:
            self.score = 0.0
            return False
        self.score = _hsv_change(previous, small) if same_size else math.inf
        if self.score < self.threshold or index - self.last_cut < self.min_gap_frames:
            return False
        self.last_cut = index
        return True

    def _small_hsv(self, rgb: np.ndarray) -> np.ndarray:
        """(h, width, 3) int16 HSV copy of ``rgb``, h from the aspect ratio."""
        height = max(1, round(rgb.shape[0] * self.width / rgb.shape[1]))
        small = cv2.resize(rgb, (self.width, height), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.int16)


def _hsv_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two (h, w, 3) int16 HSV images, averaged over H (circular), S and V."""
    diff = np.abs(a - b)
    hue = np.minimum(diff[..., 0], _HUE_PERIOD - diff[..., 0])
    return float((hue.mean() + diff[..., 1].mean() + diff[..., 2].mean()) / 3.0)
