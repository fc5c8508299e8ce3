"""Motion stitching: turn generated motion into the warp network's keypoints, applying every user control.

This is the reference ``MotionStitch`` (core/atomic_components/motion_stitch.py). For each frame, in order:

1. mix source and driving motion (relative to the first driving frame ``d0``; keys outside ``use_d_keys``
   come from the source);
2. fix the expression: lips always follow the driving motion, eyes follow it, the source, or a blink clip;
3. ``vad_alpha``: blend the expression toward the source (mouth closes during silence);
4. pose / expression controls (``delta_*`` in degrees, ``alpha_*``, ``delta_exp``);
5. fade toward a target (``fade_alpha``; the source or the first frame);
6. gaze fix: shift the pupils in proportion to the head turn away from the source pose;
7. posed keypoints of source and driving motion, then the stitching network.

Motion records are per-frame dicts ``{key: (1, width)}`` as described in
:mod:`ditto_research.motion.keypoints` (``MotionInfo.frame(i)`` of :mod:`ditto_research.motion.format` gives
them; the source record also has ``kp``).
Per-frame controls are :class:`FrameControls`, merged over the run-wide ``overall_controls`` key by key; they
and ``parse_ctrl_info`` live in the torch-free :mod:`ditto_research.motion.controls` (re-exported here), so
the config schema validates with the same code.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ditto_research.choices import FADE_TYPES, FadeType, check_choice
from ditto_research.errors import ConfigError, InputError
from ditto_research.models.stitching import StitchingNetwork
from ditto_research.motion.controls import MOTION_KEYS, FrameControls, parse_ctrl_info  # noqa: F401
from ditto_research.motion.keypoints import NUM_KEYPOINTS, is_pose_logits, to_degrees, transform_keypoint

MotionDict = Mapping[str, np.ndarray]
StitchFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
BlinkRng = random.Random | np.random.Generator

LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)
EYE_KEYPOINTS = (11, 13, 15, 16, 18)
# Random blink schedule: frames the eyes stay open between blinks, drawn uniformly (inclusive).
BLINK_OPEN_MIN, BLINK_OPEN_MAX = 60, 100
# Length of the blink schedule when the number of frames is unknown (streaming).
UNKNOWN_LENGTH_FRAMES = 3000
# Gaze fix: degrees of head turn -> eye shift (x from yaw, y from pitch), and per-coordinate gains.
GAZE_YAW_RATIO, GAZE_PITCH_RATIO = 0.26, 0.28
# exp columns: 33/34 = x/y of keypoint 11, 45/46 = x/y of keypoint 15 (the two pupils).
GAZE_X_COLS, GAZE_Y_COLS = (33, 45), (34, 46)


# ---- controls ----------------------------------------------------------------------------------------------


def with_fade_in_out(
    ctrl_info: Mapping[int, FrameControls], n_frames: int, fade_in: int = -1, fade_out: int = -1
) -> dict[int, FrameControls]:
    """Add the reference's fade-in/out ramps to ``ctrl_info`` (a new dict; ``fade_alpha`` is overwritten).

    Fade in: frames 0..fade_in-1 get ``i / fade_in``. Fade out: frames n-fade_out-1..n-1 get
    ``(n - 1 - i) / fade_out``, reaching 0 on the last frame. Either is off when <= 0. The ramps only act
    when the stitcher's ``fade_type`` is "s" or "d0".
    """
    out = dict(ctrl_info)
    ramps: list[tuple[int, float]] = []
    if fade_in > 0:
        ramps += [(i, i / fade_in) for i in range(fade_in)]
    if fade_out > 0:
        last = n_frames - 1
        ramps += [(i, (last - i) / fade_out) for i in range(max(n_frames - fade_out - 1, 0), n_frames)]
    for frame, alpha in ramps:
        out[frame] = dataclasses.replace(out.get(frame, FrameControls()), fade_alpha=alpha)
    return out


def blink_schedule(
    n_frames: int, blink_len: int, open_n: int | Sequence[int] = -1, rng: BlinkRng | None = None
) -> list[int]:
    """Per-frame row of the blink clip (``delta_eye_arr``): 0 while eyes are open, 0..blink_len-1 in a blink.

    Args:
        n_frames: schedule length.
        blink_len: rows of the blink clip (one blink plays every row once).
        open_n: frames the eyes stay open between blinks. -1: never blink. 0: random, uniform in
            [60, 100] before each blink and for the tail. n > 0: fixed. A list: cycled (first value before
            the first blink, last value reserved at the end).
        rng: source of the random gaps (``open_n == 0`` only). A ``random.Random(s)`` reproduces the
            reference run after ``random.seed(s)``; a numpy Generator draws ``integers(60, 101)``.
            None: ``random.Random(0)``.
    """
    schedule = [0] * n_frames
    if isinstance(open_n, (int, np.integer)):
        if open_n < 0:
            return schedule
        fixed = [open_n] if open_n > 0 else []
    else:
        fixed = [int(n) for n in open_n]
    draw = _gap_sampler(rng if rng is not None else random.Random(0))

    first_gap = fixed[0] if fixed else draw()
    tail_gap = fixed[-1] if fixed else draw()
    last_start = n_frames - max(tail_gap, blink_len)
    start, n_blinks = first_gap, 1
    while start < last_start:
        schedule[start : start + blink_len] = range(blink_len)
        gap = fixed[n_blinks % len(fixed)] if fixed else draw()
        n_blinks += 1
        start += blink_len + gap
    return schedule


def _gap_sampler(rng: BlinkRng) -> Callable[[], int]:
    if isinstance(rng, random.Random):
        return lambda: rng.randint(BLINK_OPEN_MIN, BLINK_OPEN_MAX)
    return lambda: int(rng.integers(BLINK_OPEN_MIN, BLINK_OPEN_MAX + 1))


def _keypoint_mask(indices: Sequence[int]) -> np.ndarray:
    """(1, 63) float32: 1 on the xyz coordinates of the given keypoints."""
    mask = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
    mask[list(indices)] = 1
    return mask.reshape(1, -1)


def mix_source_driving(
    x_s_info: MotionDict, x_d_info: MotionDict, d_weights: Mapping[str, float], d0: MotionDict | None
) -> dict[str, np.ndarray]:
    """Step 1: the driving record in source space.

    With ``d0``: ``x_s + (x_d - d0) * w`` for each driving key. Without: ``x_d * w``. Keys outside
    ``d_weights`` (and keys the driving record lacks, e.g. ``kp``) are the source's. Pose keys are mixed as
    logits, as in the reference.
    """
    if d0 is not None:
        mixed = {k: x_s_info[k] + _weighted(v - d0[k], d_weights.get(k, 1.0)) for k, v in x_d_info.items()}
    else:
        mixed = dict(x_d_info)
    for key, value in x_s_info.items():
        if key not in mixed or key not in d_weights:
            mixed[key] = value
    if d0 is None:
        for key, weight in d_weights.items():
            if weight != 1:
                mixed[key] = mixed[key] * weight
    return mixed


def _weighted(change: np.ndarray, weight: float) -> np.ndarray:
    return change if weight == 1 else change * weight


def apply_pose_controls(info: dict[str, np.ndarray], controls: FrameControls) -> dict[str, np.ndarray]:
    """Step 4: ``delta_<angle>`` (degrees; makes the angle degrees), ``alpha_<angle>``, ``delta_exp``."""
    for angle in ("pitch", "yaw", "roll"):
        delta = getattr(controls, f"delta_{angle}")
        if delta is not None:
            info[angle] = to_degrees(info[angle]) + delta
    for angle in ("pitch", "yaw", "roll"):
        alpha = getattr(controls, f"alpha_{angle}")
        if alpha is not None:
            info[angle] = info[angle] * alpha
    if controls.delta_exp is not None:
        info["exp"] = info["exp"] + np.asarray(controls.delta_exp, dtype=np.float32).reshape(1, -1)
    return info


def fade_toward(
    info: dict[str, np.ndarray],
    target: MotionDict,
    alpha: float,
    keys: Sequence[str] | None,
    pose_in_degrees: bool = False,
) -> dict[str, np.ndarray]:
    """Step 5: ``info[k] * alpha + target[k] * (1 - alpha)`` for each key (None: every key but ``kp``).

    A reference quirk, kept by default: when a pose key is in degrees on one side and 66-bin logits on the
    other (a ``delta_*`` control on a faded angle), the reference blends them by broadcasting, which garbles
    that angle. ``pose_in_degrees=True`` (``control.fade_pose_in_degrees``) converts both to degrees first.
    """
    for key in info.keys() if keys is None else keys:
        if key == "kp":
            continue
        mine, theirs = info[key], target[key]
        mixed_units = key in ("pitch", "yaw", "roll") and is_pose_logits(mine) != is_pose_logits(theirs)
        if mixed_units and pose_in_degrees:
            mine, theirs = to_degrees(mine), to_degrees(theirs)
        info[key] = mine * alpha + theirs * (1 - alpha)
    return info


def fix_gaze(
    exp: np.ndarray, source_yaw_pitch: tuple[float, float], yaw: np.ndarray, pitch: np.ndarray
) -> np.ndarray:
    """Step 6: move the pupils' x/y against the head turn relative to the source pose -> new exp (N, 63).

    ``dx = 0.26 * (yaw - yaw_s)``, ``dy = 0.28 * (pitch - pitch_s)`` (degrees); x of keypoints 11/15 gets
    ``(0.0007, 0.001) * dx`` when dx > 0, else ``(0.001, 0.0007) * dx``; y of both gets ``-0.001 * dy``.
    """
    yaw_s, pitch_s = source_yaw_pitch
    # Python-float (float64) math, rounded to float32 once per addend, as the reference does.
    dx = (np.asarray(yaw, dtype=np.float64).reshape(-1) - yaw_s) * GAZE_YAW_RATIO
    dy = (np.asarray(pitch, dtype=np.float64).reshape(-1) - pitch_s) * GAZE_PITCH_RATIO
    gain_first = np.where(dx > 0, 0.0007, 0.001)
    gain_second = np.where(dx > 0, 0.001, 0.0007)
    exp = exp.copy()
    exp[:, GAZE_X_COLS[0]] += (dx * gain_first).astype(exp.dtype)
    exp[:, GAZE_X_COLS[1]] += (dx * gain_second).astype(exp.dtype)
    for col in GAZE_Y_COLS:
        exp[:, col] += (dy * -0.001).astype(exp.dtype)
    return exp


def _stitch_fn(network: nn.Module | StitchFn) -> StitchFn:
    """Wrap a torch stitching module as a numpy function; other callables (ONNX, TensorRT) pass through."""
    if not isinstance(network, nn.Module):
        return network
    device = next(network.parameters()).device

    def run(kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = network(torch.from_numpy(kp_source).to(device), torch.from_numpy(kp_driving).to(device))
        return out.cpu().numpy()

    return run


def _copy_record(info: MotionDict) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in info.items()}


def _check_record(info: MotionDict, name: str, required: Sequence[str]) -> None:
    missing = [k for k in required if k not in info]
    if missing:
        raise InputError(f"{name} lacks motion keys {missing}; a record needs {list(required)}")


class MotionStitcher:
    """Per-session motion stitching (the reference's ``MotionStitch.setup`` + ``__call__``).

    Holds the session state explicitly: the frame counter (drives the blink schedule), ``d0`` (first driving
    frame), the fade target, and the cached source keypoints and pose (still images only).

    Args:
        stitching_network: a :class:`StitchingNetwork` (or any module with its forward), or a numpy function
            ``(kp_source, kp_driving) (1,21,3) -> (1,21,3)`` (ONNX / TensorRT). Needed when use_stitching.
        x_s_info: source motion record. For a still image it is used for every frame's source keypoints,
            source pose (gaze fix) and ``fade_type="s"`` target. None: taken from the first call.
        n_frames: frames in the clip, for the blink schedule (-1: unknown, a 3000-frame schedule).
        use_d_keys: motion keys taken from the generated motion, the others from the source. A mapping
            gives per-key weights on the generated change. Default: all but scale for images, ``("exp",)``
            for videos.
        relative_d: drive with the change since the first generated frame ``d0`` (x_s + x_d - d0), not with
            the generated motion itself. Default True.
        drive_eye: eyes follow the generated motion (True) or the source (False). Default: True for images,
            False for videos.
        delta_eye_arr: (K, 63) expression offsets of one blink (K frames), added to the source eyes on a
            schedule; only with drive_eye. Default None (no blink clip).
        delta_eye_open_n: frames between blinks: -1 never, 0 random 60-100 (from ``rng``), n > 0 fixed,
            a list cycles. Default -1.
        fade_out_keys: keys that ``fade_alpha`` blends (None: all). Default ``("exp",)``; frames can override.
        fade_type: fade target: "" (fading off), "s" (the source motion), "d0" (the first frame's controlled
            motion). Default "".
        use_stitching: run the stitching network on the driving keypoints. Default True.
        fade_pose_in_degrees: fade a pose angle that a ``delta_*`` control turned into degrees in degrees
            (see :func:`fade_toward`); False, the default, blends it as the reference does.
        is_image: the source is a still image (cache source keypoints, pose and fade target). Default True.
        d0: the reference driving frame; None: the first driving frame seen (with relative_d).
        reference_scale: scale of the character whose motion the generator imitates (the reference's
            ``ch_info``); when set, changes in exp/pitch/yaw/roll are multiplied by reference_scale / source
            scale. Default None (no rescaling).
        overall_controls: controls applied to every frame; a frame's own controls override them key by key.
        rng: random source for ``delta_eye_open_n == 0`` (see :func:`blink_schedule`); None: Random(0).
    """

    def __init__(
        self,
        stitching_network: StitchingNetwork | nn.Module | StitchFn | None = None,
        *,
        x_s_info: MotionDict | None = None,
        n_frames: int = -1,
        use_d_keys: Sequence[str] | Mapping[str, float] | None = None,
        relative_d: bool = True,
        drive_eye: bool | None = None,
        delta_eye_arr: np.ndarray | None = None,
        delta_eye_open_n: int | Sequence[int] = -1,
        fade_out_keys: Sequence[str] | None = ("exp",),
        fade_type: FadeType = "",
        use_stitching: bool = True,
        fade_pose_in_degrees: bool = False,
        is_image: bool = True,
        d0: MotionDict | None = None,
        reference_scale: float | None = None,
        overall_controls: FrameControls | Mapping[str, object] | None = None,
        rng: BlinkRng | None = None,
    ) -> None:
        check_choice("fade_type", fade_type, FADE_TYPES)
        if use_stitching and stitching_network is None:
            raise ConfigError(
                "use_stitching=True needs a stitching network; pass one or set use_stitching=False"
            )
        if use_d_keys is None:
            use_d_keys = ("exp", "pitch", "yaw", "roll", "t") if is_image else ("exp",)
        for key in list(use_d_keys) + list(fade_out_keys or ()):
            if key not in MOTION_KEYS:
                raise ConfigError(f"motion key {key!r} is not valid; choose from {MOTION_KEYS}")
        if delta_eye_arr is not None:
            delta_eye_arr = np.asarray(delta_eye_arr, dtype=np.float32)
            if (
                delta_eye_arr.ndim != 2
                or delta_eye_arr.shape[1] != 3 * NUM_KEYPOINTS
                or not len(delta_eye_arr)
            ):
                raise InputError(f"delta_eye_arr must be (K, 63), got {delta_eye_arr.shape}")

        self.stitch = (
            _stitch_fn(stitching_network) if use_stitching and stitching_network is not None else None
        )
        self.is_image = is_image
        self.relative_d = relative_d
        self.drive_eye = is_image if drive_eye is None else drive_eye
        self.fade_type = fade_type
        self.fade_pose_in_degrees = fade_pose_in_degrees
        self.fade_out_keys = None if fade_out_keys is None else tuple(fade_out_keys)
        self.overall_controls = FrameControls.coerce(overall_controls)
        self._d_weights = (
            dict(use_d_keys) if isinstance(use_d_keys, Mapping) else dict.fromkeys(use_d_keys, 1.0)
        )
        self._reference_scale = reference_scale
        self._scale_ratio_applied = False

        self._blink_arr = delta_eye_arr if self.drive_eye else None
        self._open_n = delta_eye_open_n
        self._rng = rng if rng is not None else random.Random(0)  # one stream across schedule rebuilds
        self._n_frames: int | None = None
        self._blinks: list[int] = []
        self.set_num_frames(n_frames)

        # Expression fix: exp = exp_d * a1 + exp_s * a2 + delta_eye * a3 (lips L, eyes E).
        lips, eyes = _keypoint_mask(LIP_KEYPOINTS), _keypoint_mask(EYE_KEYPOINTS)
        driven = lips + eyes if self.drive_eye and self._blink_arr is None else lips
        blink = eyes if self._blink_arr is not None else np.zeros_like(eyes)
        self._exp_a1 = driven * (1 - blink)
        self._exp_a2 = (1 - driven) + driven * blink
        self._exp_a3 = blink

        self.frame_index = 0
        self.d0 = None if d0 is None else _copy_record(d0)
        self._source_pose: tuple[float, float] | None = None
        self._x_s: np.ndarray | None = None
        self._fade_target: dict[str, np.ndarray] | None = None
        if x_s_info is not None:
            self._apply_scale_ratio(x_s_info)
            if is_image:
                self._source_pose = self._yaw_pitch(x_s_info)
                self._x_s = transform_keypoint(x_s_info)
                if fade_type == "s":
                    self._fade_target = _copy_record(x_s_info)

    # ---- session settings ----------------------------------------------------------------------------------

    def set_num_frames(self, n_frames: int) -> None:
        """Set the clip length (-1: unknown); rebuilds the blink schedule so the clip ends with open eyes."""
        if n_frames == self._n_frames:
            return
        self._n_frames = n_frames
        if self._blink_arr is not None:
            length = UNKNOWN_LENGTH_FRAMES if n_frames == -1 else n_frames
            self._blinks = blink_schedule(length, len(self._blink_arr), self._open_n, self._rng)

    @property
    def blink_indices(self) -> list[int]:
        """The blink schedule in use (row of ``delta_eye_arr`` per frame; empty without blinks)."""
        return list(self._blinks)

    def set_d0(self, d0: MotionDict) -> None:
        """Use ``d0`` as the reference driving frame (online mode sets it from the first generated window)."""
        self.d0 = _copy_record(d0)

    # ---- per frame -----------------------------------------------------------------------------------------

    def __call__(
        self,
        x_s_info: MotionDict,
        x_d_info: MotionDict,
        controls: FrameControls | Mapping[str, object] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One frame: source and generated motion records -> (x_s, x_d), each (1, 21, 3) float32.

        ``controls`` are this frame's controls (FrameControls or a mapping of control names; unknown names
        raise ConfigError); absent ones fall back to ``overall_controls``. Advances the frame counter.
        """
        motion = self.drive_motion(x_s_info, x_d_info, controls)
        if self._x_s is not None:
            x_s = self._x_s
        else:
            x_s = transform_keypoint(x_s_info)
            if self.is_image:
                self._x_s = x_s
        x_d = transform_keypoint(motion)
        if self.stitch is not None:
            x_d = self.stitch(x_s, x_d)
        self.frame_index += 1
        return np.array(x_s, dtype=np.float32), np.asarray(x_d, dtype=np.float32)

    def drive_motion(
        self,
        x_s_info: MotionDict,
        x_d_info: MotionDict,
        controls: FrameControls | Mapping[str, object] | None = None,
    ) -> dict[str, np.ndarray]:
        """Steps 1-6 for the current frame -> the driving motion record that gets posed.

        Pose keys are logits, or degrees (N,) where a ``delta_*`` control converted them. Sets ``d0`` and the
        fade target on first use; does not advance the frame counter (``__call__`` does).
        """
        _check_record(x_s_info, "source motion", (*MOTION_KEYS, "kp"))
        unknown = sorted(set(x_d_info) - {*MOTION_KEYS, "kp"})
        if unknown:
            raise InputError(f"driving motion has unknown keys {unknown}; valid keys: {MOTION_KEYS}")
        ctrl = FrameControls.coerce(controls).merged_over(self.overall_controls)
        self._apply_scale_ratio(x_s_info)
        if self.relative_d and self.d0 is None:
            self.d0 = _copy_record(x_d_info)

        info = mix_source_driving(x_s_info, x_d_info, self._d_weights, self.d0)
        delta_eye: np.ndarray | float = 0.0
        if self._blink_arr is not None and self._blinks:
            delta_eye = self._blink_arr[self._blinks[self.frame_index % len(self._blinks)]][None]
        info["exp"] = info["exp"] * self._exp_a1 + x_s_info["exp"] * self._exp_a2 + delta_eye * self._exp_a3

        vad_alpha = 1.0 if ctrl.vad_alpha is None else ctrl.vad_alpha
        if vad_alpha < 1:
            # The whole expression moves to the source (the reference builds a lip mask but does not use it).
            info["exp"] = info["exp"] * vad_alpha + x_s_info["exp"] * (1 - vad_alpha)

        info = apply_pose_controls(info, ctrl)
        if self.fade_type == "d0" and self._fade_target is None:
            self._fade_target = _copy_record(info)
        if ctrl.fade_alpha is not None and self.fade_type in ("d0", "s"):
            keys = ctrl.fade_out_keys if ctrl.fade_out_keys is not None else self.fade_out_keys
            target = self._fade_source_target(x_s_info)
            info = fade_toward(info, target, ctrl.fade_alpha, keys, self.fade_pose_in_degrees)

        if self.drive_eye:
            if self._source_pose is None:
                self._source_pose = self._yaw_pitch(x_s_info)
            info["exp"] = fix_gaze(
                info["exp"], self._source_pose, to_degrees(info["yaw"]), to_degrees(info["pitch"])
            )
        return info

    # ---- helpers -------------------------------------------------------------------------------------------

    def _fade_source_target(self, x_s_info: MotionDict) -> MotionDict:
        if self._fade_target is not None:
            return self._fade_target
        target = _copy_record(x_s_info)  # fade_type "s" without a cached source
        if self.is_image:
            self._fade_target = target
        return target

    @staticmethod
    def _yaw_pitch(x_s_info: MotionDict) -> tuple[float, float]:
        return float(to_degrees(x_s_info["yaw"]).item()), float(to_degrees(x_s_info["pitch"]).item())

    def _apply_scale_ratio(self, x_s_info: MotionDict) -> None:
        """Once: weight exp/pitch/yaw/roll changes by reference_scale / source scale (reference ch_info)."""
        if self._reference_scale is None or self._scale_ratio_applied:
            return
        self._scale_ratio_applied = True
        ratio = self._reference_scale / float(np.asarray(x_s_info["scale"]).item())
        if ratio != 1:
            rescaled = ("exp", "pitch", "yaw", "roll")
            self._d_weights = {k: w * (ratio if k in rescaled else 1) for k, w in self._d_weights.items()}


def stitch_sequence(
    stitcher: MotionStitcher,
    x_s_info: MotionDict,
    x_d_infos: Sequence[MotionDict],
    ctrl_info: Mapping[int, FrameControls] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a still-image clip: per-frame records (+ ``{frame: FrameControls}``) -> x_s, x_d (N, 1, 21, 3)."""
    ctrl_info = ctrl_info or {}
    outputs = [stitcher(x_s_info, x_d, ctrl_info.get(i)) for i, x_d in enumerate(x_d_infos)]
    return np.stack([o[0] for o in outputs]), np.stack([o[1] for o in outputs])
