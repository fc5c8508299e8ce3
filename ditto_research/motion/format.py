"""The 265-d motion vector that the LMDM predicts, and conversions to per-key motion.

Layout of one motion row (the reference ``_cvt_LP_motion_info`` order; ``kp`` only in the 328-wide form):

    =========  ========  =====  =========================================================
    key        columns   width  meaning
    =========  ========  =====  =========================================================
    scale      0:1       1      keypoint scale, stored as ``scale - 1`` in the vector
    pitch      1:67      66     head pitch, 66-bin logits
    yaw        67:133    66     head yaw, 66-bin logits
    roll       133:199   66     head roll, 66-bin logits
    t          199:202   3      translation
    exp        202:265   63     expression offsets of the 21 keypoints (21 x 3)
    kp         265:328   63     canonical keypoints (source side only; never in LMDM output)
    =========  ========  =====  =========================================================

All conversions are vectorised over frames: a motion array is ``(N, 265)`` (or ``(N, 328)`` with ``kp``),
a :class:`MotionInfo` holds one ``(N, width)`` array per key, and the per-frame dicts that the renderer
stages consume hold ``(1, width)`` arrays, as the reference ``cvt_fmt`` produces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from ditto_research.errors import InputError

__all__ = [
    "MOTION_LAYOUT",
    "MotionInfo",
    "MotionLayout",
    "clip_motion",
    "source_motion_vector",
]


@dataclass(frozen=True)
class MotionLayout:
    """Column widths of the motion vector, in vector order (see the module docstring for the table)."""

    scale: int = 1
    pitch: int = 66
    yaw: int = 66
    roll: int = 66
    t: int = 3
    exp: int = 63
    kp: int = 63

    @property
    def keys(self) -> tuple[str, ...]:
        """All keys in vector order, ``kp`` last."""
        return tuple(f.name for f in fields(self))

    @property
    def motion_keys(self) -> tuple[str, ...]:
        """The keys of the LMDM motion vector (everything but ``kp``)."""
        return self.keys[:-1]

    def slice(self, key: str) -> slice:
        """Columns of ``key`` in the motion vector."""
        start = 0
        for name in self.keys:
            width = getattr(self, name)
            if name == key:
                return slice(start, start + width)
            start += width
        raise KeyError(f"unknown motion key {key!r}; expected one of {self.keys}")

    @property
    def motion_dim(self) -> int:
        """Width of the LMDM motion vector (265)."""
        return sum(getattr(self, k) for k in self.motion_keys)

    @property
    def full_dim(self) -> int:
        """Width with ``kp`` appended (328)."""
        return self.motion_dim + self.kp

    @property
    def pose_dim(self) -> int:
        """Columns of scale, pitch, yaw, roll and t (202): the part the reference smooths over time."""
        return self.slice("t").stop


MOTION_LAYOUT = MotionLayout()


def _as_rows(value: np.ndarray, width: int, key: str) -> np.ndarray:
    """One key's value as ``(N, width)``; accepts ``(width,)``, ``(N, width)`` and ``(N, 1, width)``."""
    array = np.asarray(value)
    if array.size % width != 0:
        raise InputError(
            f"motion key {key!r} has shape {array.shape}; its size must be a multiple of {width}"
        )
    return array.reshape(-1, width)


@dataclass(frozen=True, eq=False)
class MotionInfo:
    """Per-key motion of N frames; ``scale`` is the real scale (the vector stores ``scale - 1``).

    Attributes:
        scale: (N, 1)
        pitch, yaw, roll: (N, 66) bin logits
        t: (N, 3)
        exp: (N, 63)
        kp: (N, 63) or None (LMDM output carries no keypoints)
    """

    scale: np.ndarray
    pitch: np.ndarray
    yaw: np.ndarray
    roll: np.ndarray
    t: np.ndarray
    exp: np.ndarray
    kp: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.scale.shape[0]
        for key in MOTION_LAYOUT.keys:
            value = getattr(self, key)
            if value is None:
                continue
            expected = (n, getattr(MOTION_LAYOUT, key))
            if value.shape != expected:
                raise InputError(f"MotionInfo.{key} has shape {value.shape}, expected {expected}")

    def __len__(self) -> int:
        return int(self.scale.shape[0])

    @property
    def present_keys(self) -> tuple[str, ...]:
        """Keys that hold data (``kp`` only when set)."""
        return MOTION_LAYOUT.keys if self.kp is not None else MOTION_LAYOUT.motion_keys

    # ---- motion array <-> MotionInfo -------------------------------------------------------------

    @classmethod
    def from_array(cls, motion: np.ndarray) -> MotionInfo:
        """Split a motion array into keys (the reference ``arr2dic`` for every row at once).

        Args:
            motion: (N, 265), or (N, 328) with ``kp`` appended; a single (265,) row is taken as N = 1.
        Returns:
            MotionInfo whose arrays are new arrays (scale) or views of ``motion`` (the others).
        """
        rows = np.asarray(motion)
        if rows.ndim == 1:
            rows = rows[None]
        width = rows.shape[-1] if rows.ndim == 2 else -1
        if width not in (MOTION_LAYOUT.motion_dim, MOTION_LAYOUT.full_dim):
            raise InputError(
                f"motion array has shape {np.shape(motion)}; expected (N, {MOTION_LAYOUT.motion_dim}) "
                f"or (N, {MOTION_LAYOUT.full_dim}) with kp"
            )
        parts = {key: rows[:, MOTION_LAYOUT.slice(key)] for key in MOTION_LAYOUT.motion_keys}
        parts["scale"] = parts["scale"] + 1
        kp = rows[:, MOTION_LAYOUT.slice("kp")] if width == MOTION_LAYOUT.full_dim else None
        return cls(kp=kp, **parts)

    def to_array(self, include_kp: bool = False) -> np.ndarray:
        """Concatenate into (N, 265), or (N, 328) when ``include_kp`` (needs ``kp``); stores ``scale - 1``."""
        if include_kp and self.kp is None:
            raise InputError("include_kp=True needs MotionInfo.kp, which is None")
        keys = MOTION_LAYOUT.keys if include_kp else MOTION_LAYOUT.motion_keys
        parts = [self.scale - 1 if key == "scale" else getattr(self, key) for key in keys]
        return np.concatenate(parts, axis=-1)

    # ---- per-frame dicts (the reference x_d_info / x_s_info) ------------------------------------

    def frame(self, index: int) -> dict[str, np.ndarray]:
        """Motion dict of one frame: ``{key: (1, width)}`` views, as ``cvt_fmt`` gives per frame."""
        return {key: getattr(self, key)[index : index + 1] for key in self.present_keys}

    def to_frame_dicts(self) -> list[dict[str, np.ndarray]]:
        """One motion dict per frame (the reference ``cvt_fmt`` output)."""
        return [self.frame(i) for i in range(len(self))]

    @classmethod
    def from_frame_dicts(cls, frames: Sequence[Mapping[str, np.ndarray]]) -> MotionInfo:
        """Stack per-frame motion dicts (values of any shape with the key's width) into N frames.

        ``kp`` is kept only when every frame has it.
        """
        if len(frames) == 0:
            raise InputError("from_frame_dicts needs at least one frame")
        stacked: dict[str, np.ndarray | None] = {}
        for key in MOTION_LAYOUT.keys:
            width = getattr(MOTION_LAYOUT, key)
            present = [key in frame for frame in frames]
            if key == "kp" and not all(present):
                stacked[key] = None
                continue
            if not all(present):
                raise InputError(f"motion dict of frame {present.index(False)} lacks key {key!r}")
            stacked[key] = np.concatenate([_as_rows(frame[key], width, key) for frame in frames], axis=0)
        return cls(**stacked)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, info: Mapping[str, np.ndarray]) -> MotionInfo:
        """Motion of N frames from one dict whose values have N rows of the key's width (``kp`` optional)."""
        missing = [key for key in MOTION_LAYOUT.motion_keys if key not in info]
        if missing:
            raise InputError(f"motion dict lacks keys {missing}; it has {sorted(info)}")
        values = {
            key: _as_rows(info[key], getattr(MOTION_LAYOUT, key), key) for key in MOTION_LAYOUT.motion_keys
        }
        kp = info.get("kp")
        values["kp"] = None if kp is None else _as_rows(kp, MOTION_LAYOUT.kp, "kp")
        return cls(**values)  # type: ignore[arg-type]


def source_motion_vector(x_s_info: Mapping[str, np.ndarray]) -> np.ndarray:
    """The source motion as one 265-d row (the reference ``dic2arr`` with ``kp`` ignored).

    This is the LMDM's first ``kp_cond`` and the value ``fix_kp_cond`` resets to.

    Args:
        x_s_info: one frame's motion dict; each value has its key's width (e.g. ``(1, 66)``); ``kp`` ignored.
    Returns:
        (265,) array, ``scale - 1`` in column 0, dtype of the inputs.
    """
    info = MotionInfo.from_dict({k: v for k, v in x_s_info.items() if k != "kp"})
    if len(info) != 1:
        raise InputError(f"x_s_info must describe one frame, got {len(info)}")
    return info.to_array()[0]


def clip_motion(motion: np.ndarray, value_range: np.ndarray | None) -> np.ndarray:
    """Clip each motion column to ``value_range`` (the reference ``v_min_max_for_clip``), or pass through.

    Args:
        motion: (N, D)
        value_range: (2, D) rows (min, max), or None for no clipping.
    """
    if value_range is None:
        return motion
    bounds = np.asarray(value_range)
    if bounds.shape != (2, motion.shape[-1]):
        raise InputError(
            f"v_min_max_for_clip has shape {bounds.shape}; expected (2, {motion.shape[-1]}) rows (min, max)"
        )
    return np.clip(motion, bounds[0][None], bounds[1][None])
