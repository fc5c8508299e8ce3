"""Portraits a server offers: the configured ones and uploads, each registered once and cached by content
hash.

An upload is size-checked, decoded and validated as an image before anything else sees it, and re-encoded as
PNG into the server's own temporary folder under its hash (never under a name the client chose).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ditto_research.errors import DittoError, InputError
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.render.image_limits import UPLOAD_BUDGET, UPLOAD_FORMATS, checked_header, decode

log = logging.getLogger(__name__)

__all__ = ["Portrait", "PortraitStore"]


@dataclass
class Portrait:
    """One portrait: its id (content hash), a display name, its size and (once registered) the source."""

    id: str
    name: str
    path: Path
    width: int
    height: int
    source: RegisteredSource | None = None
    size_bytes: int = 0  # of the stored PNG

    def describe(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "width": self.width, "height": self.height}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def decode_image(data: bytes, max_bytes: int, what: str = "the upload") -> np.ndarray:
    """(H, W, 3) uint8 BGR of an uploaded image, or InputError saying what is wrong with ``what``.

    Its size is read from its header and checked against ``UPLOAD_BUDGET`` before a pixel is decoded (a small
    file may declare a huge image); a decoder failure is an InputError too (HTTP 400, never 500).
    """
    if not data:
        raise InputError(f"{what} is empty; send an image file (PNG, JPEG, WebP, BMP)")
    if len(data) > max_bytes:
        raise InputError(
            f"{what} is {len(data) / 2**20:.1f} MB, over the limit of {max_bytes / 2**20:.1f} MB "
            "(serve.max_upload_mb); send a smaller image"
        )
    header = checked_header(data, what, UPLOAD_BUDGET, UPLOAD_FORMATS)
    return decode(data, header, what)


class PortraitStore:
    """Thread-safe registry of portraits, registering each on the engine at most once.

    Uploads are kept in least-recently-used order and capped by count (``max_uploads``) and by the bytes of
    their files (``max_upload_disk_bytes``): adding one beyond either cap forgets the least recently used
    upload (its file and its registration; a session already using it keeps its own reference). Portraits of
    the server's config are pinned.
    """

    def __init__(
        self,
        engine: Engine,
        folder: Path,
        max_upload_bytes: int,
        max_uploads: int = 32,
        max_upload_disk_bytes: int = 256 * 2**20,
    ) -> None:
        self.engine = engine
        self.folder = folder
        self.max_upload_bytes = max_upload_bytes
        self.max_uploads = max_uploads
        self.max_upload_disk_bytes = max_upload_disk_bytes
        self.evicted = 0
        self._portraits: collections.OrderedDict[str, Portrait] = collections.OrderedDict()
        self._pinned: set[str] = set()
        self._lock = threading.Lock()
        self._register_lock = threading.Lock()

    def add_file(self, path: str | Path) -> Portrait:
        """A server-side portrait (read, validated and copied like an upload; never evicted)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"serve.portraits: {path} does not exist; give image paths")
        return self.add_bytes(path.read_bytes(), path.name, limit=False)

    def add_bytes(self, data: bytes, name: str = "upload", limit: bool = True) -> Portrait:
        """Validate and store an image; the same bytes give the same portrait (and its registration).
        ``limit=False``: a server portrait (no upload size limit, pinned)."""
        image = decode_image(data, self.max_upload_bytes if limit else 2**62)
        pid = _digest(data)
        with self._lock:
            known = self._portraits.get(pid)
            if known is not None:
                self._portraits.move_to_end(pid)
                if not limit:
                    self._pinned.add(pid)
                return known
            target = self.folder / f"{pid}.png"
            if not cv2.imwrite(str(target), image):
                raise DittoError(f"could not write the portrait to the server's folder {self.folder}")
            height, width = image.shape[:2]
            safe_name = "".join(c for c in Path(name).name if c.isalnum() or c in "._- ")[:80] or "upload"
            portrait = Portrait(pid, safe_name, target, width, height, size_bytes=target.stat().st_size)
            self._portraits[pid] = portrait
            if not limit:
                self._pinned.add(pid)
            evicted = self._evict_locked(keep=pid)
        for old in evicted:
            old.path.unlink(missing_ok=True)
        return portrait

    def _evict_locked(self, keep: str) -> list[Portrait]:
        """Forget least recently used uploads until both caps hold (``keep``, the newest, stays)."""
        uploads = [p for pid, p in self._portraits.items() if pid not in self._pinned]  # oldest first
        count, size = len(uploads), sum(p.size_bytes for p in uploads)
        evicted = []
        for portrait in uploads:
            if count <= self.max_uploads and size <= self.max_upload_disk_bytes:
                break
            if portrait.id == keep:
                continue
            del self._portraits[portrait.id]
            count, size = count - 1, size - portrait.size_bytes
            evicted.append(portrait)
        if evicted:
            self.evicted += len(evicted)
            log.info(
                "forgot %d least recently used upload(s) (serve.max_portraits / max_portrait_mb)",
                len(evicted),
            )
        return evicted

    def registered(self, pid: str) -> RegisteredSource:
        """The registered source of portrait ``pid`` (registered on first use; a face is required)."""
        portrait = self.get(pid)
        with self._register_lock:
            if portrait.source is None:
                try:
                    portrait.source = self.engine.register(portrait.path)
                except InputError as e:
                    raise InputError(f"portrait {portrait.name} ({pid}): {e}") from e
            return portrait.source

    def get(self, pid: str) -> Portrait:
        """Portrait ``pid`` (marked as recently used), or InputError."""
        with self._lock:
            portrait = self._portraits.get(str(pid))
            if portrait is not None:
                self._portraits.move_to_end(portrait.id)
        if portrait is None:
            raise InputError(
                f"portrait {pid!r} does not exist; list them with GET /api/portraits or upload one"
            )
        return portrait

    def remove(self, pid: str) -> None:
        """Forget an upload whose registration failed (e.g. no face), so it is not offered."""
        with self._lock:
            portrait = self._portraits.pop(pid, None)
        if portrait is not None:
            portrait.path.unlink(missing_ok=True)

    def list(self) -> list[dict[str, object]]:
        with self._lock:
            return [p.describe() for p in self._portraits.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._portraits)

    def close(self) -> None:
        with self._lock:
            portraits = list(self._portraits.values())
        for portrait in portraits:
            if portrait.source is not None:
                portrait.source.media.close()
