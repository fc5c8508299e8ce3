"""A prepared dataset on disk: one ``.npz`` per clip under ``clips/`` and a ``manifest.json`` that lists them.

    DATASET/
      manifest.json        {"format": "ditto-prepared", "version": 1, "config": {...}, "clips": [...]}
      clips/<clip_id>.npz  :func:`~ditto_research.data.clip.save_clip`

The manifest is the index: a clip counts once its entry is there, and the entry is written after the clip
file (both atomically), so a killed job leaves no half clip and a rerun knows what is finished
(:meth:`DatasetWriter.has`). ``version`` changes when the arrays' definitions change; a reader refuses a
dataset of another version in one line instead of training on features it would misread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ditto_research.data.clip import PreparedClip, load_clip, save_clip, write_atomically
from ditto_research.errors import InputError

__all__ = ["FORMAT", "FORMAT_VERSION", "DatasetWriter", "PreparedDataset"]

FORMAT = "ditto-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CLIP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=1, sort_keys=True).encode("utf-8")
    write_atomically(path, lambda f: f.write(text))


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the dataset in ``folder`` (InputError, one line, unless it is one of this version)."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise InputError(f"dataset folder {folder} does not exist; give the folder of a prepared dataset")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputError(
            f"{folder} is not a prepared dataset (no {MANIFEST}); give the folder of a prepared dataset"
        ) from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} cannot be read ({e}); prepare the dataset again") from e
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("clips"), list)
    ):
        raise InputError(f"{path} is not a manifest of a prepared dataset; prepare the dataset again")
    version = manifest.get("version")
    if version != FORMAT_VERSION:
        raise InputError(
            f"dataset {folder} has format version {version}, and this ditto_research reads version "
            f"{FORMAT_VERSION}: prepare it again, or read it with the ditto_research version that made it"
        )
    return manifest


class PreparedDataset:
    """The clips of a prepared dataset, in manifest order: ``len()``, iteration, ``dataset[i]``
    (a :class:`~ditto_research.data.clip.PreparedClip`, loaded from its file on access), ``config`` (what
    prepared it) and ``entries`` (each clip's manifest entry: id, file, frames and its metadata).

    Raises:
        InputError: no dataset there, or one of another format version (one line).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        manifest = read_manifest(self.folder)
        self.config: Mapping[str, Any] = manifest.get("config", {})
        self.entries: list[dict[str, Any]] = list(manifest["clips"])

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> PreparedClip:
        entry = self.entries[index]
        clip = load_clip(self.folder / entry["file"])
        if clip.frames != entry["frames"]:
            raise InputError(
                f"prepared clip {entry['file']} has {clip.frames} frames but the manifest says "
                f"{entry['frames']}; prepare the dataset again"
            )
        return clip

    def __iter__(self) -> Iterator[PreparedClip]:
        for index in range(len(self)):
            yield self[index]

    @property
    def total_frames(self) -> int:
        return sum(int(entry["frames"]) for entry in self.entries)


class DatasetWriter:
    """Adds clips to the dataset in ``folder`` (created if needed; an existing one must be of this format
    version). ``config`` is recorded in the manifest (what prepared it: model, front-end, feature versions,
    a config hash)."""

    def __init__(self, folder: str | Path, config: Mapping[str, Any]) -> None:
        self.folder = Path(folder).expanduser()
        if (self.folder / MANIFEST).exists():
            manifest = read_manifest(self.folder)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            manifest = {"format": FORMAT, "version": FORMAT_VERSION, "clips": []}
        manifest["config"] = dict(config)
        (self.folder / "clips").mkdir(exist_ok=True)
        self._manifest = manifest
        self._ids = {entry["id"] for entry in manifest["clips"]}
        _write_json(self.folder / MANIFEST, manifest)

    def has(self, clip_id: str) -> bool:
        """Whether ``clip_id`` is finished (in the manifest): a rerun skips it."""
        return clip_id in self._ids

    def add(self, clip: PreparedClip) -> None:
        """Write ``clip``'s file, then its manifest entry (both atomic)."""
        if not _CLIP_ID.fullmatch(clip.clip_id):
            raise InputError(
                f"clip id {clip.clip_id!r} cannot name a file; use letters, digits, '.', '_' and '-' "
                "(starting with a letter or digit)"
            )
        if self.has(clip.clip_id):
            raise InputError(f"clip {clip.clip_id} is already in {self.folder}")
        file = f"clips/{clip.clip_id}.npz"
        save_clip(clip, self.folder / file)
        self._manifest["clips"].append({"id": clip.clip_id, "file": file, "frames": clip.frames, **clip.meta})
        _write_json(self.folder / MANIFEST, self._manifest)
        self._ids.add(clip.clip_id)
