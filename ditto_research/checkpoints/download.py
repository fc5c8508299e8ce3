"""Download the official checkpoint root from the Hugging Face Hub, and the hints that say how.

Every hint names our command and its ``hf download`` equivalent (huggingface_hub's CLI), so a machine
without network can be given the command to run elsewhere. huggingface_hub is imported only to download.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ditto_research.checkpoints.layout import CHECK_PARTS, HF_REPO, PARTS
from ditto_research.errors import CheckpointError

__all__ = [
    "DOWNLOAD_COMMAND",
    "DOWNLOAD_PARTS",
    "DownloadPart",
    "download",
    "download_hint",
    "download_selection",
    "hf_download_command",
]

# Our downloader; every hint also spells out the `hf download` equivalent (download_hint).
DOWNLOAD_COMMAND = "python -m ditto_research.checkpoints download"


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
