"""Official config pickles (``ditto_cfg/*.pkl``): read without executing code, convert to a config delta.

The pickles hold plain containers, numbers, strings and numpy arrays; a restricted unpickler admits those and
refuses any other import. :func:`write_cfg_yaml` turns one into a ``# @package _global_`` YAML delta
(``python -m ditto_research.checkpoints convert-cfg``).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ditto_research.errors import CheckpointError

__all__ = ["convert_cfg", "load_cfg_pkl", "write_cfg_yaml"]

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "slice"),
}


class _RefusedImport(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits plain containers, numbers, strings and numpy arrays; any other import is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise _RefusedImport(f"refused to import {module}.{name}")


def load_cfg_pkl(path: str | Path) -> dict[str, Any]:
    """Read an official ``ditto_cfg/*.pkl`` without executing code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"config pickle {path} does not exist")
    try:
        with path.open("rb") as f:
            obj = _RestrictedUnpickler(io.BufferedReader(f)).load()
    except _RefusedImport as e:
        raise CheckpointError(
            f"config pickle {path} was refused: {e} (only containers, numbers, strings and numpy arrays are "
            "allowed; a pickle that imports code is unsafe)"
        ) from e
    except Exception as e:
        raise CheckpointError(
            f"config pickle {path} is truncated or not a pickle ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"config pickle {path} holds a {type(obj).__name__}, expected a dict")
    return obj


# Official setup kwarg -> our config key. None: derived at run time, nothing to configure.
_KWARG_TO_KEY: dict[str, str | None] = {
    "max_size": "face.max_size",
    "template_n_frames": "face.template_n_frames",
    "crop_scale": "face.crop_scale",
    "crop_vx_ratio": "face.crop_vx_ratio",
    "crop_vy_ratio": "face.crop_vy_ratio",
    "crop_flag_do_rot": "face.crop_flag_do_rot",
    "smo_k_s": "face.smo_k_s",
    "emo": "control.emo",
    "eye_f0_mode": "control.eye_f0_mode",
    "overlap_v2": "motion.overlap_v2",
    "fix_kp_cond": "motion.fix_kp_cond",
    "fix_kp_cond_dim": "motion.fix_kp_cond_dim",
    "v_min_max_for_clip": "motion.v_min_max_for_clip",
    "smo_k_d": "motion.smo_k_d",
    "sampling_timesteps": "sampler.steps",
    "use_d_keys": "control.use_d_keys",
    "relative_d": "control.relative_d",
    "drive_eye": "control.drive_eye",
    "delta_eye_arr": "control.delta_eye_arr",
    "delta_eye_open_n": "control.delta_eye_open_n",
    "fade_type": "control.fade_type",
    "fade_out_keys": "control.fade_out_keys",
    "flag_stitching": "control.flag_stitching",
    "ctrl_info": "control.ctrl_info",
    "overall_ctrl_info": "control.overall_ctrl_info",
    "fade_in": "control.fade_in",
    "fade_out": "control.fade_out",
    "chunksize": "mode.chunksize",
    "N_d": None,
}
_A2M_TO_KEY = {
    "seq_frames": "motion.seq_frames",
    "use_emo": "motion.use_emo",
    "use_sc": "motion.use_sc",
    "use_eye_open": "motion.use_eye_open",
    "use_eye_ball": "motion.use_eye_ball",
}


def _plain_value(value: Any, key: str, array_dir: Path | None, arrays: dict[str, np.ndarray]) -> Any:
    """YAML-safe form of a pickle value; arrays become .npy files next to the YAML (their path is the
    value)."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return value.item()
        arrays[key] = value
        return str((array_dir or Path(".")) / f"{key.replace('.', '_')}.npy")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain_value(v, f"{key}.{k}", array_dir, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_value(v, key, array_dir, arrays) for v in value]
    return value


def convert_cfg(
    cfg: dict[str, Any], array_dir: Path | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray], list[str]]:
    """Map an official config dict to our config values.

    Returns (nested dict of our keys, arrays to save as .npy keyed by config key, notes about skipped
    entries).
    """
    values: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    notes: list[str] = []

    def put(dotted: str, value: Any) -> None:
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _plain_value(value, dotted, array_dir, arrays)

    a2m = cfg.get("audio2motion_cfg", {}) or {}
    for k, v in a2m.items():
        if k in _A2M_TO_KEY:
            put(_A2M_TO_KEY[k], v)
        elif k == "motion_feat_dim" and int(v) != 265:
            notes.append(f"audio2motion_cfg.motion_feat_dim={v} (this framework expects 265)")
        elif k == "audio_feat_dim":
            notes.append(
                f"audio2motion_cfg.audio_feat_dim={v}: the LMDM width is read from the checkpoint instead"
            )
        elif k not in ("model_path", "device", "motion_feat_dim", "w2f_type"):
            notes.append(f"audio2motion_cfg.{k} has no equivalent here (skipped)")
    if a2m.get("w2f_type", "hubert") != "hubert":
        notes.append(f"audio2motion_cfg.w2f_type={a2m['w2f_type']!r}: only hubert features are supported")
    for k, v in (cfg.get("default_kwargs", {}) or {}).items():
        key = _KWARG_TO_KEY.get(k, "")
        if k == "online_mode":
            put("mode.name", "online" if v else "offline")
        elif key == "":
            notes.append(f"default_kwargs.{k} has no equivalent here (skipped)")
        elif key is not None:
            put(key, v)
    return values, arrays, notes


def write_cfg_yaml(pkl: str | Path, out: str | Path | None) -> str:
    """Convert an official pickle into a ``# @package _global_`` YAML delta (usable as ``+preset=NAME``)."""
    cfg = load_cfg_pkl(pkl)
    out_path = Path(out) if out else None
    values, arrays, notes = convert_cfg(cfg, out_path.parent if out_path else None)
    lines = [
        "# @package _global_",
        f"# Converted from {Path(pkl).name} by `python -m ditto_research.checkpoints convert-cfg`.",
    ]
    lines += [f"# note: {n}" for n in notes]
    text = "\n".join(lines) + "\n" + yaml.safe_dump(values, sort_keys=True)
    if out_path is not None:
        if out_path.exists():
            raise CheckpointError(f"{out_path} already exists; choose another -o path or delete it first")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        for key, arr in arrays.items():
            np.save(out_path.parent / f"{key.replace('.', '_')}.npy", arr)
        out_path.write_text(text)
    return text
