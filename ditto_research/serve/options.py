"""What a client may set for its own session: an allow-list of keys, each with bounded values.

A client's ``options`` (``["sampler.steps=10", "control.emo=happy"]``) are untrusted text. Each one is parsed
with Hydra's override grammar, checked against :data:`RULES` (the key must be listed; the value must have the
listed form and lie in its bounds), and written out again from the checked value: nothing the client typed
reaches Hydra as it was typed. Refused outright, before any parsing:

- interpolation syntax (``$`` anywhere: ``${oc.env:SECRET}`` would be resolved and echoed back), sweeps
  (``choice(...)``, ``range(...)``), deletions (``~key``);
- keys that name files (``control.ctrl_info_file``, ``control.delta_eye_arr``, ``motion.v_min_max_for_clip``,
  an emotion ``.npy``): a client cannot make the server open one of its paths; file-valued settings come from
  the server's own config;
- keys of the model, backend, front-ends and render (the server's, shared by every session);
- more than :data:`MAX_OPTIONS` options, or one longer than :data:`MAX_OPTION_CHARS` characters.

Bounds keep one session's cost near the server's: a window of ``mode.chunksize`` at most 25 frames (1 s) a
side, ``sampler.steps`` at most ``serve.max_sampler_steps``, list lengths capped. Errors name the key, what
it accepts, and at most a short prefix of the client's own text, never a resolved or file-derived value.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ditto_research.choices import FADE_TYPES, NOISE_KINDS, SAMPLER_NAMES
from ditto_research.errors import ConfigError
from ditto_research.motion.conditions import EMOTION_LABELS
from ditto_research.motion.controls import MOTION_KEYS, FrameControls

__all__ = ["MAX_OPTIONS", "MAX_OPTION_CHARS", "RULES", "OptionRule", "session_overrides"]

MAX_OPTIONS = 64
MAX_OPTION_CHARS = 8192  # a per-frame emotion list of ~1000 frames fits
MAX_CHUNK_SIDE = 25  # frames (1 s) of left context, new audio or look-ahead per online step
MAX_FRAME = 25 * 3600  # frame indices of per-frame controls: one hour
MAX_EMO_FRAMES = 1000  # rows of a per-frame emotion list (cycled)
MAX_BLINK_GAPS = 100
MAX_ABS_CONTROL = 1000.0  # degrees, factors and offsets of the frame controls
SEED_MAX = 2**31 - 1

FILE_KEYS = {
    "control.ctrl_info_file": "a per-frame controls file",
    "control.delta_eye_arr": "a blink array",
    "motion.v_min_max_for_clip": "a motion range file",
}


class OptionRefused(ConfigError):
    """A client option that is not on the allow-list or out of its bounds (the message is for the client)."""


# ---- value checks: each returns the checked value in the form it is written back ------------------------


def _int(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"an integer in [{low}, {high}]")
        return value

    return check


def _number(low: float, high: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"a number in [{low:g}, {high:g}]")
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"a finite number in [{low:g}, {high:g}]")
        return float(value)

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _bool_or_null(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError("true, false or null")
    return value


def _choice(allowed: Sequence[str]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError("one of " + ", ".join(repr(a) if a == "" else a for a in allowed))
        return str(value)

    return check


def _list(item: Callable[[Any], Any], min_len: int, max_len: int, what: str) -> Callable[[Any], list[Any]]:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list) or not min_len <= len(value) <= max_len:
            raise ValueError(f"a list of {min_len}..{max_len} {what}")
        return [item(v) for v in value]

    return check


def _chunksize(value: Any) -> list[int]:
    form = f"[left, new, right]: three frame counts, each <= {MAX_CHUNK_SIDE}, new >= 1"
    side = _int(0, MAX_CHUNK_SIDE)
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(form)
    try:
        left, new, right = (side(v) for v in value)
    except ValueError as e:
        raise ValueError(form) from e
    if new < 1:
        raise ValueError(form)
    return [left, new, right]


def _label(value: Any) -> int | str:
    """An emotion label: a number 0..7, or a name. Any short identifier passes here, so that a misspelt name
    gets the schema's own answer (which suggests the nearest name); a path or other text cannot."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,31}", value):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(EMOTION_LABELS):
        return value
    raise ValueError("emotion labels 0..7 or their names (" + ", ".join(EMOTION_LABELS) + ")")


def _emotion(value: Any) -> Any:
    """A label, a list of labels (mixed), or a per-frame list of label lists; never a file."""
    form = (
        "a label 0..7 or its name, a list of labels, or a per-frame list of up to "
        f"{MAX_EMO_FRAMES} label lists"
    )
    try:
        if not isinstance(value, list):
            return _label(value)
        if value and all(isinstance(v, list) for v in value):
            return _list(_list(_label, 1, len(EMOTION_LABELS), "labels"), 1, MAX_EMO_FRAMES, "lists")(value)
        return _list(_label, 1, len(EMOTION_LABELS), "labels")(value)
    except ValueError as e:
        raise ValueError(form) from e


def _blink_gaps(value: Any) -> int | list[int]:
    if isinstance(value, list):
        return _list(_int(1, MAX_FRAME), 1, MAX_BLINK_GAPS, "frame counts >= 1")(value)
    try:
        return _int(-1, MAX_FRAME)(value)
    except ValueError as e:
        raise ValueError(
            f"-1 (never), 0 (random), a gap n > 0, or a list of up to {MAX_BLINK_GAPS} gaps"
        ) from e


_motion_keys = _list(
    _choice(MOTION_KEYS), 1, len(MOTION_KEYS), "motion keys (" + ", ".join(MOTION_KEYS) + ")"
)
_control_number = _number(-MAX_ABS_CONTROL, MAX_ABS_CONTROL)


def _frame_control(name: str) -> Callable[[Any], Any]:
    """The check of one frame control (``motion.controls.FrameControls``) by name."""
    if name == "fade_out_keys":
        return _motion_keys
    if name == "delta_exp":

        def delta_exp(value: Any) -> Any:
            if isinstance(value, list):
                return _list(_control_number, 63, 63, f"numbers in ±{MAX_ABS_CONTROL:g}")(value)
            return _control_number(value)

        return delta_exp
    return _control_number


@dataclass(frozen=True)
class OptionRule:
    """One key a client may set: how its value is checked and what it accepts (for errors and docs)."""

    key: str
    check: Callable[[Any], Any]
    accepts: str


@functools.lru_cache(maxsize=8)
def build_rules(max_steps: int) -> Mapping[str, OptionRule]:
    """The allow-list, key -> rule (``serve.max_sampler_steps`` bounds ``sampler.steps``)."""
    rules = [
        OptionRule("sampler", _choice(SAMPLER_NAMES), "a sampler: " + ", ".join(SAMPLER_NAMES)),
        OptionRule(
            "sampler.steps", _int(1, max_steps), f"denoising steps 1..{max_steps} (serve.max_sampler_steps)"
        ),
        OptionRule("sampler.guidance_scale", _number(0.0, 10.0), "classifier-free guidance 0..10"),
        OptionRule("sampler.eta", _number(0.0, 1.0), "DDIM eta 0..1 (sampler=ddim)"),
        OptionRule(
            "mode.chunksize", _chunksize, f"[left, new, right] frames, each <= {MAX_CHUNK_SIDE}, new >= 1"
        ),
        # 75 (+preset=realtime): a window every 5 frames; more would multiply the LMDM's cost per frame
        OptionRule("motion.overlap_v2", _int(0, 75), "frames shared by consecutive windows, 0..75"),
        OptionRule("motion.smo_k_d", _int(1, 25), "motion smoothing width 1..25"),
        OptionRule(
            "motion.fix_kp_cond", _int(0, 1000), "reset the motion condition every k windows, 0..1000"
        ),
        OptionRule("motion.fix_kp_cond_dim", _list(_int(0, 265), 2, 2, "dims"), "[start, end] in 0..265"),
        OptionRule(
            "control.emo", _emotion, "a label 0..7 or name, a list of labels, a per-frame list of lists"
        ),
        OptionRule("control.eye_f0_mode", _bool, "true / false"),
        OptionRule("control.drive_eye", _bool_or_null, "true / false / null"),
        OptionRule("control.delta_eye_open_n", _blink_gaps, "-1, 0, a blink gap n > 0, or a list of gaps"),
        OptionRule("control.use_d_keys", _motion_keys, "a list of motion keys"),
        OptionRule("control.relative_d", _bool, "true / false"),
        OptionRule("control.fade_type", _choice(FADE_TYPES), "'' (none), d0 or s"),
        OptionRule("control.fade_out_keys", _motion_keys, "a list of motion keys"),
        OptionRule("control.fade_in", _int(-1, MAX_FRAME), f"frames -1..{MAX_FRAME}"),
        OptionRule("control.fade_out", _int(-1, MAX_FRAME), f"frames -1..{MAX_FRAME}"),
        OptionRule("control.flag_stitching", _bool, "true / false"),
        OptionRule("control.fade_pose_in_degrees", _bool, "true / false"),
        OptionRule("control.seed", _int(0, SEED_MAX), f"a seed 0..{SEED_MAX}"),
        OptionRule("control.noise", _choice(NOISE_KINDS), " or ".join(NOISE_KINDS)),
    ]
    for name in FrameControls.names():
        accepts = f"a number in ±{MAX_ABS_CONTROL:g}" if name != "fade_out_keys" else "a list of motion keys"
        rules.append(OptionRule(f"control.overall_ctrl_info.{name}", _frame_control(name), accepts))
    return MappingProxyType({rule.key: rule for rule in rules})  # cached and shared: read-only


RULES = build_rules(max_steps=50)  # the defaults, for docs and tests (a server's bound may differ)


def _client_text(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _parse(option: str) -> tuple[str, Any]:
    """(key, value) of one ``key=value`` option, refusing what a client may never send."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if len(option) > MAX_OPTION_CHARS:
        raise OptionRefused(f"an option is {len(option)} characters long; at most {MAX_OPTION_CHARS}")
    if "$" in option:
        raise OptionRefused(
            f"option {_client_text(option)}: interpolations (${{...}}) are not accepted from clients; "
            "send plain values"
        )
    try:
        parsed = OverridesParser.create().parse_override(option)
    except (HydraException, OmegaConfBaseException, ValueError, RecursionError) as e:
        raise OptionRefused(f"option {_client_text(option)} is not key=value; e.g. control.emo=happy") from e
    if parsed.is_sweep_override() or parsed.is_delete() or parsed.package is not None:
        raise OptionRefused(
            f"option {_client_text(option)}: sweeps, deletions and packages are not accepted; send key=value"
        )
    return parsed.key_or_group, parsed.value()


def _rule_for(key: str, rules: Mapping[str, OptionRule], option: str) -> tuple[OptionRule, str]:
    """The rule of ``key`` and the Hydra key to write (per-frame controls: ``control.ctrl_info.N.name``)."""
    if key in rules:
        return rules[key], key
    parts = key.split(".")
    if len(parts) == 4 and parts[:2] == ["control", "ctrl_info"] and parts[3] in FrameControls.names():
        if not (parts[2].isdigit() and int(parts[2]) <= MAX_FRAME):
            raise OptionRefused(f"{key}: the frame must be an integer in [0, {MAX_FRAME}]")
        base = rules[f"control.overall_ctrl_info.{parts[3]}"]
        return OptionRule(key, base.check, base.accepts), f"control.ctrl_info.{int(parts[2])}.{parts[3]}"
    if key in FILE_KEYS:
        raise OptionRefused(
            f"{key} names {FILE_KEYS[key]} on the server; clients cannot set file options (the server's "
            "config can)"
        )
    raise OptionRefused(
        f"option {_client_text(option)} is not per-session; a session may set {allowed_keys(rules)}"
    )


def allowed_keys(rules: Mapping[str, OptionRule]) -> str:
    """The allow-list in short: ``sampler, sampler.{steps,...}, ..., control.ctrl_info.FRAME.CONTROL``."""
    by_parent: dict[str, list[str]] = {}
    for key in rules:
        if key.startswith("control.overall_ctrl_info."):
            continue
        parent, _, leaf = key.rpartition(".")
        by_parent.setdefault(parent, []).append(leaf)
    parts = [
        (f"{parent}.{{{','.join(leaves)}}}" if len(leaves) > 1 else f"{parent}.{leaves[0]}")
        if parent
        else leaves[0]
        for parent, leaves in by_parent.items()
        for leaves in [leaves]
    ]
    return ", ".join([*parts, "control.overall_ctrl_info.CONTROL", "control.ctrl_info.FRAME.CONTROL"])


def _hydra_value(value: Any) -> str:
    """A checked value written as a Hydra override value (no client text survives)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):  # names from a fixed list, or ""
        return value if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) else f"'{value}'"
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    raise TypeError(f"no override form for {type(value).__name__}")  # a bug: the checks return the above


def session_overrides(options: Sequence[str], max_steps: int = 50) -> list[str]:
    """Hydra overrides for a client's ``options`` (OptionRefused, a ConfigError, naming the first bad one).

    Keys of dict-valued controls (``control.overall_ctrl_info.*``, ``control.ctrl_info.*``) are written as
    ``++key=value`` (add or replace), so a client need not know whether the server's config sets them.
    """
    if len(options) > MAX_OPTIONS:
        raise OptionRefused(f"{len(options)} options; a session takes at most {MAX_OPTIONS}")
    rules = build_rules(max_steps)  # built once per bound (a server has one)
    out = []
    for option in options:
        key, value = _parse(option)
        if key.endswith(".npy") or (isinstance(value, str) and value.endswith(".npy")):
            raise OptionRefused(f"{key}: clients cannot name files on the server; send labels or numbers")
        rule, hydra_key = _rule_for(key, rules, option)
        try:
            checked = rule.check(value)
        except ValueError as e:
            raise OptionRefused(
                f"{key}={_client_text(str(option.partition('=')[2]))} is refused; give {e}"
            ) from e
        prefix = "++" if hydra_key.startswith(("control.overall_ctrl_info.", "control.ctrl_info.")) else ""
        out.append(f"{prefix}{hydra_key}={_hydra_value(checked)}")
    return out
