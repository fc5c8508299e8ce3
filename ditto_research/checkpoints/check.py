"""Is a folder a complete checkpoint root? Every missing or malformed file, one line each.

Model code (torch, onnx, the network registry) is imported only when files are loaded (``deep``), so a
folder that is no checkpoint root at all is reported before any of it is imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ditto_research.checkpoints.convert import load_cfg_pkl
from ditto_research.checkpoints.download import download_hint
from ditto_research.checkpoints.layout import (
    CHECK_PARTS,
    FACE_FILES,
    HF_REPO,
    HUBERT_FILE,
    MODEL_FILES,
    PART_FOLDERS,
    PARTS,
    CheckpointRoot,
)
from ditto_research.errors import CheckpointError

__all__ = ["check_root", "find_problems", "root_problem"]


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
    if any(any(root.glob(folder)) for folder in set(PART_FOLDERS.values())):
        return None
    expected = " and ".join(f"{f}/" for f in sorted({PART_FOLDERS[p] for p in parts}))
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
    if "trt" in parts and not any(ckpt.root.glob(f"{PART_FOLDERS['trt']}/*.engine")):
        problems.append(f"no TensorRT engines: nothing matches {ckpt.root / PART_FOLDERS['trt']}/*.engine")
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
