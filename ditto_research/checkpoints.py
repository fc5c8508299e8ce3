"""Locate, validate and read a checkpoint root in the Hugging Face layout of digital-avatar/ditto-talkinghead.

    checkpoints/
      ditto_cfg/v0.4_hubert_cfg_pytorch.pkl ...         settings (read with a restricted unpickler)
      ditto_pytorch/models/{appearance_extractor,motion_extractor,warp_network,decoder,stitch_network,
                            lmdm_v0.4_hubert}.pth
      ditto_pytorch/aux_models/{det_10g.onnx,2d106det.onnx,landmark203.onnx,face_landmarker.task,
                                hubert_streaming_fix_kv.onnx}
      ditto_onnx/*.onnx   ditto_trt_*/*.engine

CLI::

    python -m ditto_research.checkpoints check DIR            # every problem in one report, exit 1 if any
    python -m ditto_research.checkpoints convert-cfg FILE.pkl [-o conf/preset/official.yaml]
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ditto_research.errors import CheckpointError, DittoError

HF_REPO = "digital-avatar/ditto-talkinghead"
DOWNLOAD_COMMAND = f"huggingface-cli download {HF_REPO} --local-dir checkpoints"

MODEL_FILES: dict[str, str] = {
    "appearance_extractor": "appearance_extractor.pth",
    "motion_extractor": "motion_extractor.pth",
    "warp_network": "warp_network.pth",
    "decoder": "decoder.pth",
    "stitch_network": "stitch_network.pth",
    "lmdm": "lmdm_v0.4_hubert.pth",
}
FACE_FILES: tuple[str, ...] = ("det_10g.onnx", "2d106det.onnx", "landmark203.onnx", "face_landmarker.task")
HUBERT_FILE = "hubert_streaming_fix_kv.onnx"
CFG_FILES: tuple[str, ...] = (
    "v0.4_hubert_cfg_pytorch.pkl",
    "v0.4_hubert_cfg_trt.pkl",
    "v0.4_hubert_cfg_trt_online.pkl",
)
PARTS = ("models", "face", "hubert", "cfg")


@dataclass(frozen=True)
class CheckpointRoot:
    """Paths inside a checkpoint root (nothing is read until asked)."""

    root: Path

    @property
    def models_dir(self) -> Path:
        return self.root / "ditto_pytorch" / "models"

    @property
    def aux_dir(self) -> Path:
        return self.root / "ditto_pytorch" / "aux_models"

    @property
    def onnx_dir(self) -> Path:
        return self.root / "ditto_onnx"

    def model_path(self, name: str, filename: str | None = None) -> Path:
        return self.models_dir / (filename or MODEL_FILES[name])

    def aux_path(self, filename: str) -> Path:
        return self.aux_dir / filename

    def cfg_path(self, filename: str = CFG_FILES[0]) -> Path:
        return self.root / "ditto_cfg" / filename

    def has_face_models(self) -> bool:
        return all(self.aux_path(f).is_file() for f in FACE_FILES)


def _file_problem(path: Path) -> str | None:
    if not path.exists():
        return f"missing {path}"
    if not path.is_file():
        return f"{path} is not a file"
    if path.stat().st_size == 0:
        return f"{path} is empty"
    return None


def find_problems(
    root: str | Path,
    parts: Iterable[str] = PARTS,
    deep: bool = True,
    lmdm_file: str = MODEL_FILES["lmdm"],
) -> list[str]:
    """Every missing or malformed file of the requested ``parts`` (models, face, hubert, cfg), one line each.

    With ``deep`` the ``.pth`` files are loaded (weights only) and checked key by key against the networks, the
    config pickle is read with the restricted unpickler, and ONNX files must parse.
    """
    from ditto_research.models.registry import (  # local: keeps `checkpoints --help` fast
        describe_mismatch,
        get_spec,
        lmdm_cond_dim,
        state_dict_from_file,
    )

    ckpt = CheckpointRoot(Path(root))
    if not ckpt.root.is_dir():
        return [f"checkpoint root {ckpt.root} does not exist"]
    parts = tuple(parts)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown checkpoint parts {sorted(unknown)}; choose from {PARTS}")
    problems: list[str] = []
    if "models" in parts:
        for name in MODEL_FILES:
            path = ckpt.model_path(name, lmdm_file if name == "lmdm" else None)
            problem = _file_problem(path)
            if problem is None and deep:
                try:
                    state = state_dict_from_file(name, path)
                    kwargs = {"cond_dim": lmdm_cond_dim(state)} if name == "lmdm" else {}
                    problem = describe_mismatch(_meta_module(get_spec(name), kwargs), state)
                    problem = f"{path} does not fit {name}: {problem}" if problem else None
                except CheckpointError as e:
                    problem = str(e)
            if problem:
                problems.append(problem)
    aux = [*FACE_FILES] * ("face" in parts) + [HUBERT_FILE] * ("hubert" in parts)
    for filename in aux:
        path = ckpt.aux_path(filename)
        problem = _file_problem(path) or (_onnx_problem(path) if deep and path.suffix == ".onnx" else None)
        if problem:
            problems.append(problem)
    if "cfg" in parts:
        path = ckpt.cfg_path()
        problem = _file_problem(path)
        if problem is None and deep:
            try:
                load_cfg_pkl(path)
            except CheckpointError as e:
                problem = str(e)
        if problem:
            problems.append(problem)
    return problems


def _meta_module(spec: Any, kwargs: dict[str, Any]) -> Any:
    import torch

    with torch.device("meta"):
        return spec.build(**kwargs)


def _onnx_problem(path: Path) -> str | None:
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        return f"{path} is not a valid ONNX file ({type(e).__name__}); download it again"
    return None


def check_root(root: str | Path, parts: Iterable[str] = PARTS, deep: bool = False, **kwargs: Any) -> CheckpointRoot:
    """Return the root if the requested parts are complete, else raise one CheckpointError listing every problem."""
    problems = find_problems(root, parts, deep=deep, **kwargs)
    if problems:
        listed = "; ".join(problems)
        raise CheckpointError(
            f"checkpoint root {root} is incomplete ({len(problems)} problem(s)): {listed}. "
            f"Get the official files with: {DOWNLOAD_COMMAND} (or pass model.checkpoint_root=DIR; "
            "model=untrained / model=tiny need no files)"
        )
    return CheckpointRoot(Path(root))


# ---------------------------------------------------------------------------------------------- config pickles

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
            f"config pickle {path} was refused: {e} (only containers, numbers, strings and numpy arrays are allowed; "
            "a pickle that imports code is unsafe)"
        ) from e
    except Exception as e:
        raise CheckpointError(f"config pickle {path} is truncated or not a pickle ({type(e).__name__}: {e})") from e
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
    """YAML-safe form of a pickle value; arrays become .npy files next to the YAML (their path is the value)."""
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


def convert_cfg(cfg: dict[str, Any], array_dir: Path | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray], list[str]]:
    """Map an official config dict to our config values.

    Returns (nested dict of our keys, arrays to save as .npy keyed by config key, notes about skipped entries).
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
            notes.append(f"audio2motion_cfg.audio_feat_dim={v}: the LMDM width is read from the checkpoint instead")
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
    lines = ["# @package _global_", f"# Converted from {Path(pkl).name} by `python -m ditto_research.checkpoints convert-cfg`."]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditto_research.checkpoints", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="validate a checkpoint root; lists every missing or malformed file")
    p_check.add_argument("root", type=Path)
    p_check.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="what to check (default: all)")
    p_check.add_argument("--quick", action="store_true", help="only check that files exist (no loading)")
    p_conv = sub.add_parser("convert-cfg", help="official ditto_cfg/*.pkl -> YAML config delta for conf/")
    p_conv.add_argument("pkl", type=Path)
    p_conv.add_argument("-o", "--output", type=Path, default=None, help="YAML file to write (default: print)")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            problems = find_problems(args.root, args.parts, deep=not args.quick)
            if problems:
                print(f"{args.root}: {len(problems)} problem(s):", file=sys.stderr)
                for p in problems:
                    print(f"  - {p}", file=sys.stderr)
                print(f"Get the official files with: {DOWNLOAD_COMMAND}", file=sys.stderr)
                return 1
            print(f"{args.root}: OK ({', '.join(args.parts)})")
            return 0
        text = write_cfg_yaml(args.pkl, args.output)
        print(f"wrote {args.output}" if args.output else text, end="\n" if args.output else "")
        return 0
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
