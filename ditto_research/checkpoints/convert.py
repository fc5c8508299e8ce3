"""Locate, validate and read a checkpoint root in the Hugging Face layout of digital-avatar/ditto-talkinghead.

    checkpoints/
      ditto_cfg/v0.4_hubert_cfg_pytorch.pkl ...         settings (read with a restricted unpickler)
      ditto_pytorch/models/{appearance_extractor,motion_extractor,warp_network,decoder,stitch_network,
                            lmdm_v0.4_hubert}.pth
      ditto_pytorch/aux_models/{det_10g.onnx,2d106det.onnx,landmark203.onnx,face_landmarker.task,
                                hubert_streaming_fix_kv.onnx}
      ditto_onnx/*.onnx   ditto_trt_*/*.engine

CLI::

    python -m ditto_research.checkpoints download [DIR] [--parts pytorch|onnx|trt|all]   # then checks DIR
    python -m ditto_research.checkpoints check DIR            # every problem in one report, exit 1 if any
    python -m ditto_research.checkpoints convert-cfg FILE.pkl [-o conf/preset/official.yaml]

Exit status: 0 fine, 1 the check found problems, 2 one-line error (no checkpoint root there, Hub unreachable,
unusable destination, refused pickle).
"""

from __future__ import annotations

import argparse
import io
import pickle
import shlex
import sys
import tempfile
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ditto_research.errors import CheckpointError, DittoError

HF_REPO = "digital-avatar/ditto-talkinghead"
# Our downloader; every hint also spells out the `hf download` equivalent (download_hint).
DOWNLOAD_COMMAND = "python -m ditto_research.checkpoints download"

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
# What the PyTorch path reads: the default of check and check_root. onnx / trt: the official ditto_onnx/ and
# ditto_trt_*/ folders, checked only on request.
PARTS = ("models", "face", "hubert", "cfg")
CHECK_PARTS = (*PARTS, "onnx", "trt")
_PART_FOLDERS = {
    "models": "ditto_pytorch",
    "face": "ditto_pytorch",
    "hubert": "ditto_pytorch",
    "cfg": "ditto_cfg",
    "onnx": "ditto_onnx",
    "trt": "ditto_trt_*",
}


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


def root_problem(root: str | Path, parts: Iterable[str] = PARTS) -> str | None:
    """None when ``root`` is a folder holding at least one official top folder, else why it is no checkpoint
    root."""
    root = Path(root)
    if not root.exists():
        return f"checkpoint root {root} does not exist"
    if not root.is_dir():
        return f"checkpoint root {root} is a file, not a folder"
    if any(any(root.glob(folder)) for folder in set(_PART_FOLDERS.values())):
        return None
    expected = " and ".join(f"{f}/" for f in sorted({_PART_FOLDERS[p] for p in parts}))
    return f"{root} is not a checkpoint root: expected {expected} of {HF_REPO} in it"


def find_problems(
    root: str | Path,
    parts: Iterable[str] = PARTS,
    deep: bool = True,
    lmdm_file: str = MODEL_FILES["lmdm"],
) -> list[str]:
    """Every missing or malformed file of the requested ``parts`` (models, face, hubert, cfg, onnx, trt), one
    line each.

    A folder that is no checkpoint root at all gives the one line of :func:`root_problem`. With ``deep`` the
    ``.pth`` files are loaded (weights only) and checked key by key against the networks, the config pickle is
    read with the restricted unpickler, and ONNX files must parse. Engines are only checked to exist.
    """
    parts = tuple(parts)
    unknown = set(parts) - set(CHECK_PARTS)
    if unknown:
        raise ValueError(f"unknown checkpoint parts {sorted(unknown)}; choose from {CHECK_PARTS}")
    problem = root_problem(root, parts)
    if problem:
        return [problem]
    ckpt = CheckpointRoot(Path(root))
    problems = _model_problems(ckpt, deep, lmdm_file) if "models" in parts else []
    aux = [*FACE_FILES] * ("face" in parts) + [HUBERT_FILE] * ("hubert" in parts)
    onnx_files = [ckpt.aux_path(f) for f in aux] + (_official_onnx_files(ckpt) if "onnx" in parts else [])
    for path in onnx_files:
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
    if "trt" in parts and not any(ckpt.root.glob(f"{_PART_FOLDERS['trt']}/*.engine")):
        problems.append(f"no TensorRT engines: nothing matches {ckpt.root / _PART_FOLDERS['trt']}/*.engine")
    return problems


def _model_problems(ckpt: CheckpointRoot, deep: bool, lmdm_file: str) -> list[str]:
    from ditto_research.models.registry import (  # local: keeps `checkpoints --help` fast
        describe_mismatch,
        get_spec,
        lmdm_cond_dim,
        state_dict_from_file,
    )

    problems = []
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
    return problems


def _official_onnx_files(ckpt: CheckpointRoot) -> list[Path]:
    """The network files of ditto_onnx/ (not its hubert.onnx: speech features come from aux_models/)."""
    from ditto_research.backends.base import NETWORK_IO

    return [ckpt.onnx_dir / io.onnx_file for name, io in NETWORK_IO.items() if name != "hubert"]


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


def check_root(
    root: str | Path, parts: Iterable[str] = PARTS, deep: bool = False, **kwargs: Any
) -> CheckpointRoot:
    """Return the root if the requested parts are complete, else raise one CheckpointError listing every
    problem."""
    parts = tuple(parts)
    problem = root_problem(root, parts)
    if problem is None:
        problems = find_problems(root, parts, deep=deep, **kwargs)
        if problems:
            problem = (
                f"checkpoint root {root} is incomplete ({len(problems)} problem(s)): {'; '.join(problems)}"
            )
    if problem:
        raise CheckpointError(
            f"{problem}. Get the official files with: {download_hint(root, parts)}; or pass "
            "model.checkpoint_root=DIR (model=untrained / model=tiny need no files)"
        )
    return CheckpointRoot(Path(root))


# --------------------------------------------------------------------------------------------- config pickles

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


# --------------------------------------------------------------------------------------------------- download


@dataclass(frozen=True)
class DownloadPart:
    """One ``download --parts`` choice: the repository files it fetches and the check parts validated
    afterwards."""

    # Allow-patterns (fnmatch: "*" also crosses "/"); None: the whole repository.
    patterns: tuple[str, ...] | None
    checks: tuple[str, ...]
    about: str


_AUX_PATTERN = "ditto_pytorch/aux_models/*"  # the face and HuBERT models every backend reads
DOWNLOAD_PARTS: dict[str, DownloadPart] = {
    "pytorch": DownloadPart(
        ("ditto_cfg/*", "ditto_pytorch/*"),
        PARTS,
        "ditto_cfg/ + ditto_pytorch/ (networks + aux models), ~2.3 GB; the default",
    ),
    "onnx": DownloadPart(
        ("ditto_cfg/*", "ditto_onnx/*", _AUX_PATTERN),
        ("onnx", "face", "hubert", "cfg"),
        "ditto_cfg/ + ditto_onnx/ + ditto_pytorch/aux_models/, for backend=onnx",
    ),
    "trt": DownloadPart(
        ("ditto_cfg/*", "ditto_trt*/*", _AUX_PATTERN),
        ("trt", "face", "hubert", "cfg"),
        "ditto_cfg/ + ditto_trt_*/ + ditto_pytorch/aux_models/ (official TensorRT 8.6 engines, "
        "which backend=tensorrt refuses: build yours from onnx, see docs/backends.md)",
    ),
    "all": DownloadPart(None, CHECK_PARTS, "the whole repository, ~6.9 GB"),
}


def download_selection(parts: Iterable[str]) -> tuple[list[str] | None, tuple[str, ...]]:
    """(allow-patterns, None meaning everything; check parts) of a set of download parts."""
    chosen = [DOWNLOAD_PARTS[p] for p in dict.fromkeys(parts)]
    if not chosen:
        raise ValueError(f"no download parts given; choose from {tuple(DOWNLOAD_PARTS)}")
    patterns = (
        None
        if any(c.patterns is None for c in chosen)
        else [*dict.fromkeys(p for c in chosen for p in c.patterns)]
    )
    return patterns, tuple(p for p in CHECK_PARTS if any(p in c.checks for c in chosen))


def hf_download_command(root: str | Path = "checkpoints", parts: Iterable[str] = ("pytorch",)) -> str:
    """The ``hf download`` command line (huggingface_hub's CLI) that fetches the same files as
    ``download``."""
    patterns, _ = download_selection(parts)
    include = "".join(f' --include "{p}"' for p in patterns or ())
    return f"hf download {HF_REPO}{include} --local-dir {shlex.quote(str(root))}"


def download_hint(root: str | Path, checks: Iterable[str] = PARTS) -> str:
    """How to get the files that check parts ``checks`` read into ``root``: our command, then the hf
    equivalent."""
    checks = tuple(checks)
    parts = tuple(p for p in ("onnx", "trt") if p in checks)
    if "models" in checks or not parts:
        parts = ("pytorch", *parts)
    flag = "" if parts == ("pytorch",) else f" --parts {','.join(parts)}"
    return f"{DOWNLOAD_COMMAND} {shlex.quote(str(root))}{flag} (or: {hf_download_command(root, parts)})"


def _check_destination(root: Path) -> None:
    """One clear error when ``root`` cannot become a writable folder; nothing is created here."""
    if root.exists() and not root.is_dir():
        raise CheckpointError(f"download destination {root} is a file; pass a folder (default: checkpoints)")
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        raise CheckpointError(f"download destination {root} cannot be created: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise CheckpointError(
            f"download destination {existing} is not writable ({e.strerror}); choose another folder or fix "
            "its permissions"
        ) from e


def _hub_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub raises when the Hub cannot be asked or a transfer breaks off."""
    from huggingface_hub.errors import EntryNotFoundError, OfflineModeIsEnabled

    # huggingface_hub's HTTP stack: httpx2 from 2.0, httpx in 1.x; HfHubHTTPError derives from its
    # HTTPError
    try:
        from httpx2 import HTTPError
    except ImportError:
        from httpx import HTTPError
    return HTTPError, OfflineModeIsEnabled, EntryNotFoundError


def _describe_hub_error(e: Exception) -> str:
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, OfflineModeIsEnabled):
        return "could not reach the Hugging Face Hub (offline mode: HF_HUB_OFFLINE is set)"
    if isinstance(e, HfHubHTTPError):
        return f"the Hugging Face Hub refused {HF_REPO} ({first_line})"
    if isinstance(e, EntryNotFoundError):
        return f"the download from the Hugging Face Hub broke off ({type(e).__name__})"
    return f"could not reach the Hugging Face Hub ({type(e).__name__}: {first_line})"


def download(root: str | Path = "checkpoints", parts: Iterable[str] = ("pytorch",)) -> Path:
    """Fetch download ``parts`` of the official repository into ``root`` (files already there are kept: it
    resumes).

    Raises one CheckpointError naming the ``hf download`` command to run elsewhere when the Hub cannot be
    reached.
    """
    import huggingface_hub
    from huggingface_hub import constants

    root, parts = Path(root), tuple(parts)
    patterns, _ = download_selection(parts)
    _check_destination(root)
    try:
        # Resolve the commit first: one request, no retries, HF_HUB_ETAG_TIMEOUT (10 s) at most, so offline it
        # fails at once; snapshot_download would instead fall back to whatever is in root. It then fetches
        # that commit.
        info = huggingface_hub.HfApi().repo_info(HF_REPO, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        huggingface_hub.snapshot_download(
            repo_id=HF_REPO, revision=info.sha, local_dir=root, allow_patterns=patterns
        )
    except _hub_errors() as e:
        raise CheckpointError(
            f"{_describe_hub_error(e)}; on a machine with network run: {hf_download_command(root, parts)}"
        ) from e
    except OSError as e:
        raise CheckpointError(
            f"could not write the download to {root} ({e}); free some space or choose another folder"
        ) from e
    return root


def _parts_list(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in DOWNLOAD_PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"invalid part {','.join(unknown) or text!r}; choose from {', '.join(DOWNLOAD_PARTS)}"
        )
    return parts


def _report(root: Path, parts: tuple[str, ...], deep: bool) -> int:
    """The ``check`` report on stdout / stderr: 0 when complete, 1 listing every problem; no checkpoint root
    raises."""
    problem = root_problem(root, parts)
    if problem:
        raise CheckpointError(f"{problem}; get the official files with: {download_hint(root, parts)}")
    problems = find_problems(root, parts, deep=deep)
    if problems:
        print(f"{root}: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        print(f"Get the official files with: {download_hint(root, parts)}", file=sys.stderr)
        return 1
    print(f"{root}: OK ({', '.join(parts)})")
    return 0


def _download_epilog() -> str:
    width = max(map(len, DOWNLOAD_PARTS))
    lines = [
        textwrap.fill(
            part.about, 100, initial_indent=f"  {name:<{width}}  ", subsequent_indent=" " * (width + 4)
        )
        for name, part in DOWNLOAD_PARTS.items()
    ]
    notes = textwrap.fill(
        "Files already in DIR are kept, so a second run resumes. Afterwards DIR is checked as `check` does "
        "(exit 0 only if it passes, 1 listing the problems). Without network (or with HF_HUB_OFFLINE=1) it "
        "stops at once with one line (exit 2) naming the command to run on a machine with network, e.g.:",
        100,
    )
    return "\n".join(
        [
            "parts (comma-separated or repeated: --parts pytorch,onnx):",
            *lines,
            "",
            notes,
            f"  {hf_download_command()}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ditto_research.checkpoints", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_down = sub.add_parser(
        "download",
        help=f"fetch {HF_REPO} from the Hugging Face Hub, then check it",
        description=(
            f"Download {HF_REPO} (or parts of it) from the Hugging Face Hub into DIR, then check DIR."
        ),
        epilog=_download_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_down.add_argument(
        "root",
        metavar="DIR",
        nargs="?",
        type=Path,
        default=Path("checkpoints"),
        help="checkpoint root to fill (default: checkpoints)",
    )
    p_down.add_argument(
        "--parts",
        type=_parts_list,
        action="extend",
        metavar="PART[,PART]",
        help=f"what to fetch: {', '.join(DOWNLOAD_PARTS)} (default: pytorch)",
    )
    p_down.add_argument(
        "--quick", action="store_true", help="afterwards only check that files exist (no loading)"
    )
    p_check = sub.add_parser(
        "check", help="validate a checkpoint root; lists every missing or malformed file"
    )
    p_check.add_argument("root", type=Path)
    p_check.add_argument(
        "--parts",
        nargs="+",
        default=list(PARTS),
        choices=CHECK_PARTS,
        help=f"what to check (default: {' '.join(PARTS)}, what backend=pytorch reads)",
    )
    p_check.add_argument("--quick", action="store_true", help="only check that files exist (no loading)")
    p_conv = sub.add_parser("convert-cfg", help="official ditto_cfg/*.pkl -> YAML config delta for conf/")
    p_conv.add_argument("pkl", type=Path)
    p_conv.add_argument("-o", "--output", type=Path, default=None, help="YAML file to write (default: print)")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            parts = tuple(args.parts or ("pytorch",))
            root = download(args.root, parts)
            return _report(root, download_selection(parts)[1], deep=not args.quick)
        if args.command == "check":
            return _report(args.root, tuple(args.parts), deep=not args.quick)
        text = write_cfg_yaml(args.pkl, args.output)
        print(f"wrote {args.output}" if args.output else text, end="\n" if args.output else "")
        return 0
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
