"""Locate, validate and read a checkpoint root in the Hugging Face layout of digital-avatar/ditto-talkinghead.

The folder tree is drawn in :mod:`ditto_research.checkpoints.layout`.

CLI::

    python -m ditto_research.checkpoints download [DIR] [--parts pytorch|onnx|trt|all]   # then checks DIR
    python -m ditto_research.checkpoints check DIR            # every problem in one report, exit 1 if any
    python -m ditto_research.checkpoints convert-cfg FILE.pkl [-o conf/preset/official.yaml]
    python -m ditto_research.checkpoints face-models          # face=mediapipe's models now; prints the folder

Exit status: 0 fine, 1 the check found problems, 2 one-line error (no checkpoint root there, Hub unreachable,
unusable destination, refused pickle).

Modules: ``layout`` (file names, :class:`CheckpointRoot`), ``check`` (what is missing or malformed),
``convert`` (the restricted config unpickler, pickle -> YAML delta), ``download`` (the Hub, and the hints
naming it), ``cli`` (the command). Every public name is importable from here, as before the split; importing
this package loads no model code (torch, onnx) and not huggingface_hub.
"""

from __future__ import annotations

from ditto_research.checkpoints.check import check_root, find_problems, root_problem
from ditto_research.checkpoints.cli import main
from ditto_research.checkpoints.convert import convert_cfg, load_cfg_pkl, write_cfg_yaml
from ditto_research.checkpoints.download import (
    DOWNLOAD_COMMAND,
    DOWNLOAD_PARTS,
    DownloadPart,
    download,
    download_hint,
    download_selection,
    hf_download_command,
)
from ditto_research.checkpoints.layout import (
    CFG_FILES,
    CHECK_PARTS,
    FACE_FILES,
    HF_REPO,
    HUBERT_FILE,
    MODEL_FILES,
    PART_FOLDERS,
    PARTS,
    CheckpointRoot,
)

__all__ = [
    "CFG_FILES",
    "CHECK_PARTS",
    "DOWNLOAD_COMMAND",
    "DOWNLOAD_PARTS",
    "FACE_FILES",
    "HF_REPO",
    "HUBERT_FILE",
    "MODEL_FILES",
    "PARTS",
    "PART_FOLDERS",
    "CheckpointRoot",
    "DownloadPart",
    "check_root",
    "convert_cfg",
    "download",
    "download_hint",
    "download_selection",
    "find_problems",
    "hf_download_command",
    "load_cfg_pkl",
    "main",
    "root_problem",
    "write_cfg_yaml",
]
