"""A prepared dataset on disk: one ``.npz`` per clip under ``clips/`` and a ``manifest.json`` that lists them.

    DATASET/
      manifest.json        {"format": "ditto-prepared", "version": 1, "identity": {...}, "config": {...},
                            "shards": [[i, n], ...], "sources": [...], "clips": [...]}
      clips/<clip_id>.npz  :func:`~ditto_research.data.clip.save_clip`
      parts/shard-<i>-of-<n>.json   what each job finished (merged into the manifest)

The manifest is the index: a clip counts once its entry is there, and the entry is written after the clip
file (both atomically), so a killed job leaves no half clip (at most a clip file no entry names, replaced
when its source is prepared again) and a rerun knows what is finished (:meth:`DatasetWriter.done`).
``version`` changes when the arrays' definitions change; a reader refuses a dataset of another version in
one line instead of training on features it would misread.
"""

from __future__ import annotations

import fcntl
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ditto_research.atomic import write_text_atomically
from ditto_research.data.clip import PreparedClip, load_clip, save_clip
from ditto_research.errors import InputError

__all__ = ["FORMAT", "FORMAT_VERSION", "DatasetWriter", "PreparedDataset", "save_entry"]

FORMAT = "ditto-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTS = "parts"
_CLIP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=1, sort_keys=True)
    write_text_atomically(path, lambda f: f.write(text))


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


def _part_name(shard: tuple[int, int]) -> str:
    return f"shard-{shard[0]:05d}-of-{shard[1]:05d}.json"


def _differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keys whose values differ between two nested settings mappings, as ``key: a -> b``."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {x!r} -> {y!r}")
    return out


def save_entry(folder: Path, clip: PreparedClip) -> dict[str, Any]:
    """Write ``clip``'s file into the dataset ``folder`` (atomic) and return its manifest entry; the entry
    counts once :meth:`DatasetWriter.finish_source` records it (worker processes write files, the job's one
    writer the manifest)."""
    if not _CLIP_ID.fullmatch(clip.clip_id):
        raise InputError(
            f"clip id {clip.clip_id!r} cannot name a file; use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )
    file = f"clips/{clip.clip_id}.npz"
    save_clip(clip, Path(folder) / file)
    return {"id": clip.clip_id, "file": file, "frames": clip.frames, **clip.meta}


class DatasetWriter:
    """Adds clips to the dataset in ``folder`` (created if needed; an existing one must be of this format
    version and, when ``identity`` is given, prepared with the same settings).

    Each job writes its own part, ``parts/shard-<i>-of-<n>.json`` (``shard`` = (i, n): one job of several
    that share the folder, e.g. cluster jobs), and after every finished source merges all parts into
    ``manifest.json`` under a file lock, so the manifest holds every finished source of every shard, in list
    order, whichever finished last.

    Args:
        config: what prepared it (recorded in the manifest).
        identity: the settings that shape the features (``config`` entries a rerun must repeat); a folder
            prepared with others is refused in one line naming the differences.
        shard: (i, n) of this job.
    """

    def __init__(
        self,
        folder: str | Path,
        config: Mapping[str, Any],
        *,
        identity: Mapping[str, Any] | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.folder = Path(folder).expanduser()
        self.config = dict(config)
        self.identity = dict(identity) if identity is not None else None
        if (self.folder / MANIFEST).exists():
            self._check_same(read_manifest(self.folder), MANIFEST)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "clips").mkdir(exist_ok=True)
        (self.folder / PARTS).mkdir(exist_ok=True)
        self.part_path = self.folder / PARTS / _part_name(shard)
        self._parts = self._read_parts()
        self._part = self._parts.get(self.part_path.name) or {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "shard": list(shard),
            "identity": self.identity,
            "config": self.config,
            "sources": [],
            "clips": [],
        }
        self._ids = {entry["id"] for part in self._parts.values() for entry in part["clips"]}
        self._sources = {s["id"] for part in self._parts.values() for s in part["sources"]}
        if not (self.folder / MANIFEST).exists():
            self.merge()

    def _check_same(self, other: Mapping[str, Any], name: str) -> None:
        theirs = other.get("identity")
        if self.identity is None or theirs is None or theirs == self.identity:
            return
        changed = "; ".join(_differences(theirs, self.identity)[:4])
        raise InputError(
            f"{self.folder} holds a dataset prepared with other settings ({changed}); choose another out "
            "folder, or prepare with the settings it was made with"
        )

    def _read_parts(self) -> dict[str, dict[str, Any]]:
        parts = {}
        for path in sorted((self.folder / PARTS).glob("shard-*.json")):
            try:
                part = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise InputError(f"{path} cannot be read ({e}); delete it to prepare its videos again") from e
            if (
                not isinstance(part, dict)
                or part.get("format") != FORMAT
                or part.get("version") != FORMAT_VERSION
            ):
                raise InputError(
                    f"{path} is not a part of a version-{FORMAT_VERSION} prepared dataset; prepare into "
                    "another folder"
                )
            self._check_same(part, path.name)
            parts[path.name] = part
        return parts

    def has(self, clip_id: str) -> bool:
        """Whether ``clip_id`` is finished (in the dataset, from any shard)."""
        return clip_id in self._ids

    def done(self, source_id: str) -> bool:
        """Whether the source ``source_id`` was finished (kept or skipped) by this or another shard: a rerun
        skips it."""
        return source_id in self._sources

    def save(self, clip: PreparedClip) -> dict[str, Any]:
        """:func:`save_entry` for a clip not yet in the dataset."""
        if self.has(clip.clip_id):
            raise InputError(f"clip {clip.clip_id} is already in {self.folder}")
        return save_entry(self.folder, clip)

    def add(self, clip: PreparedClip) -> None:
        """Write ``clip``'s file, then its manifest entry (both atomic): a source of one clip."""
        self.finish_source({"id": clip.clip_id, "status": "done"}, [self.save(clip)])

    def finish_source(self, record: Mapping[str, Any], entries: list[dict[str, Any]]) -> None:
        """Record a finished source (``record``: at least its ``id``; kept or skipped) and its clips' entries
        (from :meth:`save`) in this job's part, then merge every part into the manifest."""
        source_id = str(record["id"])
        self._part["sources"].append(dict(record))
        self._part["clips"].extend({**entry, "source_id": source_id} for entry in entries)
        self._sources.add(str(record["id"]))
        self._ids.update(entry["id"] for entry in entries)
        _write_json(self.part_path, self._part)
        self._parts[self.part_path.name] = self._part
        self.merge()

    def merge(self) -> dict[str, Any]:
        """Write ``manifest.json`` from every part in the folder (under a lock; sources in list order, each
        once) and return it."""
        with open(self.folder / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                parts = self._read_parts()
                if self._part["sources"]:
                    parts[self.part_path.name] = self._part
                sources: dict[str, dict[str, Any]] = {}
                clips: list[dict[str, Any]] = []
                for part in parts.values():
                    for source in part["sources"]:
                        if source["id"] in sources:
                            continue
                        sources[source["id"]] = source
                        clips += [
                            c for c in part["clips"] if c.get("source_id", source["id"]) == source["id"]
                        ]
                order = {sid: (s.get("order", 0), sid) for sid, s in sources.items()}
                clips.sort(key=lambda c: (order[c["source_id"]], c["id"]))
                manifest = {
                    "format": FORMAT,
                    "version": FORMAT_VERSION,
                    "identity": self.identity,
                    "config": self.config,
                    "shards": sorted(part["shard"] for part in parts.values()),
                    "sources": sorted(sources.values(), key=lambda s: order[s["id"]]),
                    "clips": clips,
                }
                _write_json(self.folder / MANIFEST, manifest)
                return manifest
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
