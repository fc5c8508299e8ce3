"""User controls as the run reads them: the emotion (``control.emo``) and the per-frame controls.

:func:`load_emotion` turns ``control.emo`` into the (m, 8) emotion rows of the LMDM condition;
:class:`FrameControls` and :func:`parse_ctrl_info` read ``overall_ctrl_info`` / ``ctrl_info`` /
``ctrl_info_file``. numpy only (no torch), so the config schema validates with the same code the condition
builder (:mod:`ditto_research.motion.conditions`) and the stitcher (:mod:`ditto_research.motion.stitch`) run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ditto_research.constants import EMOTION_DIM, SOURCE_KP_DIM
from ditto_research.errors import ConfigError, InputError
from ditto_research.motion.conditions import EMOTION_LABELS, parse_emotion
from ditto_research.motion.format import MOTION_LAYOUT
from ditto_research.user_files import load_structured

MOTION_KEYS: tuple[str, ...] = MOTION_LAYOUT.motion_keys  # scale, pitch, yaw, roll, t, exp

# Largest per-frame controls file: ~200k frames of a few scalar controls, or ~10k frames (6-7 minutes at 25
# fps) with a full 63-number delta_exp each; YAML of that size parses in a few seconds.
MAX_CTRL_FILE_BYTES = 8 * 2**20
# Deepest form: {frame: {control: [[x, y, z], ...]}} (delta_exp as 21 keypoints x xyz), or a list by frame.
MAX_CTRL_DEPTH = 4

EMOTION_FORMS = (
    "give a label 0..7 or its name ("
    + ", ".join(f"{i} {name}" for i, name in enumerate(EMOTION_LABELS))
    + f"), a list of labels (mixed), a per-frame list of label lists, or a path to an (N, {EMOTION_DIM}) .npy"
)

CtrlInfo = Mapping[int | str, "FrameControls | Mapping[str, Any] | None"] | Sequence[Mapping[str, Any]]


def load_emotion(emo: Any) -> np.ndarray:
    """``control.emo`` -> (m, 8) float32 emotion rows (m = 1: one emotion for the clip; else cycled per
    frame).

    A string ending in ``.npy`` is a file of shape (N, 8) (finite weights, used as is); anything else is a
    label spec for :func:`ditto_research.motion.conditions.parse_emotion`. Errors are one ConfigError line
    naming the value and the accepted forms.
    """
    if isinstance(emo, str) and emo.endswith(".npy"):
        return _load_emotion_file(emo)
    try:
        return parse_emotion(emo)
    except ConfigError as e:
        raise ConfigError(f"control.emo={emo!r} is not valid{_emotion_hint(emo)}; {EMOTION_FORMS}") from e


def _load_emotion_file(path: str) -> np.ndarray:
    if not Path(path).is_file():
        raise ConfigError(f"control.emo file {path} does not exist; {EMOTION_FORMS}")
    try:  # a memory map: the shape is checked from the header, before the data is read
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise ConfigError(f"control.emo file {path} is not a .npy array ({e}); {EMOTION_FORMS}") from e
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise ConfigError(f"control.emo file {path} is not a .npy array; {EMOTION_FORMS}")
    if array.ndim != 2 or array.shape[1] != EMOTION_DIM or not len(array) or array.dtype.kind not in "fiu":
        raise ConfigError(
            f"control.emo file {path} holds a {array.dtype} array of shape {array.shape}; it must be "
            f"(N, {EMOTION_DIM}): one row of emotion weights per frame, columns {', '.join(EMOTION_LABELS)}"
        )
    array = np.array(array)  # read now, the file closed
    if not np.isfinite(array).all():
        raise ConfigError(f"control.emo file {path} holds NaN or infinite values")
    return parse_emotion(array)


def _emotion_hint(emo: Any) -> str:
    """`` (12 is not a label)`` / `` ('hapy' is not a label; did you mean 'happy'?)`` for the first bad
    label."""
    for leaf in emo if isinstance(emo, (list, tuple)) else [emo]:
        if isinstance(leaf, (list, tuple)):
            if hint := _emotion_hint(leaf):
                return hint
            continue
        if isinstance(leaf, str) and leaf.strip().lower() in EMOTION_LABELS:
            continue
        if isinstance(leaf, int) and not isinstance(leaf, bool) and 0 <= leaf < len(EMOTION_LABELS):
            continue
        close = (
            difflib.get_close_matches(leaf.strip().lower(), EMOTION_LABELS, n=1)
            if isinstance(leaf, str)
            else []
        )
        return f" ({leaf!r} is not a label{f'; did you mean {close[0]!r}?' if close else ''})"
    return ""


@dataclass(frozen=True)
class FrameControls:
    """User controls for one frame (per-frame ``ctrl_info``) or for all frames (``overall_ctrl_info``).

    Every field defaults to None, meaning "not given": a frame's given fields override the overall ones,
    key by key, exactly like the reference merges its kwargs. Build from a plain mapping (YAML, JSON) with
    :meth:`from_mapping`, which rejects unknown names and non-numbers.

    Attributes:
        fade_alpha: weight of the driven motion in the fade, usually in [0, 1]: 1 = fully driven, 0 = the fade
            target (the source motion for ``fade_type="s"``, the first frame for ``"d0"``). Only acts when the
            stitcher's ``fade_type`` is "s" or "d0". Not given: no fade.
        fade_out_keys: motion keys the fade blends (from scale, pitch, yaw, roll, t, exp). Not given: the
            stitcher's ``fade_out_keys`` (default ``("exp",)``). Fading a pose key ends at the target's pose.
        delta_pitch, delta_yaw, delta_roll: degrees added to that head angle (pitch: nod, about the x axis;
            yaw: turn, about y; roll: tilt, about z). Giving one, even 0, converts that angle from the 66-bin
            logits to degrees for the rest of the frame.
        alpha_pitch, alpha_yaw, alpha_roll: factor on that angle. With ``delta_<angle>`` on the same frame
            it scales degrees (after the delta); without, it scales the 66-bin logits as the reference does,
            which flattens (< 1) or sharpens (> 1) the pose distribution and pulls the angle toward 0 deg as
            it nears 0.
        delta_exp: offsets added to the 63 expression values (a scalar, or 63 values as 21 keypoints x xyz).
        vad_alpha: weight of the driven expression; < 1 blends the whole expression toward the source's
            (e.g. to close the mouth during silence). Not given: 1 (off).
    """

    fade_alpha: float | None = None
    fade_out_keys: tuple[str, ...] | None = None
    delta_pitch: float | None = None
    delta_yaw: float | None = None
    delta_roll: float | None = None
    alpha_pitch: float | None = None
    alpha_yaw: float | None = None
    alpha_roll: float | None = None
    delta_exp: float | tuple[float, ...] | None = None
    vad_alpha: float | None = None

    def __post_init__(self) -> None:
        for key in self.fade_out_keys or ():
            if key not in MOTION_KEYS:
                raise ConfigError(
                    f"fade_out_keys: {_shown(key)} is not a motion key; choose from {', '.join(MOTION_KEYS)}"
                )
        if isinstance(self.delta_exp, tuple) and len(self.delta_exp) != SOURCE_KP_DIM:
            raise ConfigError(f"delta_exp needs 1 or {SOURCE_KP_DIM} numbers, got {len(self.delta_exp)}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FrameControls:
        """``{"delta_yaw": 10, ...}`` -> FrameControls; unknown names or non-numbers raise ConfigError."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"controls must be a mapping {{control: value}}, got {_kind(values)}")
        unknown = sorted(str(k) for k in set(values) - set(cls.names()))
        if unknown:
            shown = ", ".join(_shown(k) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise ConfigError(f"unknown frame control(s) {shown}; valid controls: {', '.join(cls.names())}")
        parsed: dict[str, Any] = {}
        for name, value in values.items():
            if value is None:
                continue
            if name == "fade_out_keys":
                parsed[name] = _motion_key_tuple(value)
            elif name == "delta_exp" and not _is_number(value):
                parsed[name] = _number_tuple(name, value)
            else:
                parsed[name] = _number(name, value)
        return cls(**parsed)

    @classmethod
    def coerce(cls, value: FrameControls | Mapping[str, Any] | None) -> FrameControls:
        """FrameControls as is, a mapping via :meth:`from_mapping`, None as "no controls"."""
        if value is None:
            return cls()
        if isinstance(value, FrameControls):
            return value
        return cls.from_mapping(value)

    def merged_over(self, base: FrameControls) -> FrameControls:
        """These controls where given, ``base`` elsewhere."""
        given = {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}
        return dataclasses.replace(base, **given)


def _shown(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error names a value, it does not echo a file."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    """``a list`` / ``a str`` ...: what a value is, without its contents."""
    name = {list: "list", tuple: "list", dict: "mapping"}.get(type(value), type(value).__name__)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _number(name: str, value: Any) -> float:
    if not _is_number(value):
        raise ConfigError(f"frame control {name}={_shown(value)} is not a number")
    if not math.isfinite(float(value)):
        raise ConfigError(f"frame control {name}={_shown(value)} is not finite")
    return float(value)


def _number_tuple(name: str, value: Any) -> float | tuple[float, ...]:
    """delta_exp: a list of numbers (63, or nested 21 x 3); a one-element list is a scalar."""
    if isinstance(value, (str, bytes, Mapping)):
        raise ConfigError(
            f"frame control {name}={_shown(value)} is not a number or a list of {SOURCE_KP_DIM} numbers"
        )
    try:
        flat = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"frame control {name}={_shown(value)} is not a number or a list of {SOURCE_KP_DIM} numbers"
        ) from e
    if not np.isfinite(flat).all():
        raise ConfigError(f"frame control {name} holds non-finite values")
    return float(flat[0]) if flat.size == 1 else tuple(float(v) for v in flat)


def _motion_key_tuple(value: Any) -> tuple[str, ...]:
    keys = [value] if isinstance(value, str) else value
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"fade_out_keys={_shown(value)} must be motion keys from {', '.join(MOTION_KEYS)}")
    return tuple(keys)


def _frame_index(key: Any) -> int | None:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key) if key >= 0 else None
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    return None


def parse_ctrl_info(ctrl_info: CtrlInfo | None, source: str = "ctrl_info") -> dict[int, FrameControls]:
    """Per-frame controls ``{frame: {control: value}}`` (keys may be digit strings, as YAML gives) or a list
    indexed by frame -> ``{frame: FrameControls}``. Errors are one line starting with ``source`` and the
    frame."""
    if ctrl_info is None:
        return {}
    if not isinstance(ctrl_info, (Mapping, list, tuple)):
        raise ConfigError(
            f"{source} must be a mapping {{frame: {{control: value}}}} or a list, got {_kind(ctrl_info)}"
        )
    items = ctrl_info.items() if isinstance(ctrl_info, Mapping) else enumerate(ctrl_info)
    parsed: dict[int, FrameControls] = {}
    for key, value in items:
        frame = _frame_index(key)
        if frame is None:
            raise ConfigError(f"{source}: key {_shown(key)} is not a frame index (an integer >= 0)")
        try:
            parsed[frame] = FrameControls.coerce(value)
        except ConfigError as e:
            raise ConfigError(f"{source}, frame {frame}: {e}") from e
    return parsed


def parse_overall_ctrl_info(
    values: Mapping[str, Any], source: str = "control.overall_ctrl_info"
) -> FrameControls:
    """The controls for every frame (``{control: value}``); errors are one line starting with ``source``."""
    try:
        return FrameControls.from_mapping(values)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e


def read_ctrl_info_file(path: str | Path) -> dict[Any, Any]:
    """``{frame: {control: value}}`` from a .yaml/.yml/.json file (one-line errors naming the file).

    Bounded before anything is built (:func:`ditto_research.user_files.load_structured`): at most
    :data:`MAX_CTRL_FILE_BYTES` from the file's stat, no YAML anchors or aliases, at most
    :data:`MAX_CTRL_DEPTH` nested containers. A run reads it once, when its config validates
    (:meth:`ditto_research.config.schema.ControlConfig.file_frames`).
    """
    path = Path(path)
    what = f"control.ctrl_info_file {path}"
    if not path.is_file():
        raise ConfigError(f"{what} does not exist")
    try:
        data = load_structured(
            path,
            what,
            max_depth=MAX_CTRL_DEPTH,
            form="{frame: {control: value or list}} or a list of {control: value or list}",
            max_bytes=MAX_CTRL_FILE_BYTES,
            fix="give only the frames that change a control (the others get control.overall_ctrl_info)",
        )
    except InputError as e:
        raise ConfigError(str(e)) from e
    if data is None:
        return {}
    if not isinstance(data, (Mapping, list)):
        raise ConfigError(
            f"control.ctrl_info_file {path} must hold a mapping {{frame: {{control: value}}}} or a list"
        )
    return dict(data) if isinstance(data, Mapping) else dict(enumerate(data))


def load_ctrl_info_file(path: str | Path) -> dict[int, FrameControls]:
    """Read and parse a per-frame controls file (errors name the file, the frame and the control)."""
    return parse_ctrl_info(read_ctrl_info_file(path), source=f"control.ctrl_info_file {path}")


__all__ = [
    "MOTION_KEYS",
    "EMOTION_FORMS",
    "FrameControls",
    "load_ctrl_info_file",
    "load_emotion",
    "parse_ctrl_info",
    "parse_overall_ctrl_info",
    "read_ctrl_info_file",
]
