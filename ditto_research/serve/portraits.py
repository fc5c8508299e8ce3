"""Portraits a server offers: the configured ones and uploads, each registered once and cached by content
hash.

An upload is size-checked, decoded and validated as an image before anything else sees it, and re-encoded as
PNG into the server's own temporary folder under its hash (never under a name the client chose).
"""

from __future__ import annotations

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

log = logging.getLogger(__name__)

__all__ = ["Portrait", "PortraitStore"]

MAX_SIDE = 8192  # larger decoded images are refused (decompression bombs)


@dataclass
class Portrait:
    """One portrait: its id (content hash), a display name, its size and (once registered) the source."""

    id: str
    name: str
    path: Path
    width: int
    height: int
    source: RegisteredSource | None = None

    def describe(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "width": self.width, "height": self.height}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def decode_image(data: bytes, max_bytes: int) -> np.ndarray:
    """(H, W, 3) uint8 BGR of an uploaded image, or InputError saying what is wrong with it."""
    if not data:
        raise InputError("the upload is empty; send an image file (PNG, JPEG, WebP, BMP)")
    if len(data) > max_bytes:
        raise InputError(
            f"the upload is {len(data) / 2**20:.1f} MB, over the limit of {max_bytes / 2**20:.1f} MB "
            "(serve.max_upload_mb); send a smaller image"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(
            "the upload is not an image this server can decode; send a PNG, JPEG, WebP or BMP file"
        )
    height, width = image.shape[:2]
    if max(height, width) > MAX_SIDE or min(height, width) < 16:
        raise InputError(f"the image is {width}x{height}; send one between 16 and {MAX_SIDE} pixels a side")
    return image


class PortraitStore:
    """Thread-safe registry of portraits, registering each on the engine at most once."""

    def __init__(self, engine: Engine, folder: Path, max_upload_bytes: int) -> None:
        self.engine = engine
        self.folder = folder
        self.max_upload_bytes = max_upload_bytes
        self._portraits: dict[str, Portrait] = {}
        self._lock = threading.Lock()
        self._register_lock = threading.Lock()

    def add_file(self, path: str | Path) -> Portrait:
        """A server-side portrait (read, validated and copied like an upload)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"serve.portraits: {path} does not exist; give image paths")
        return self.add_bytes(path.read_bytes(), path.name, limit=False)

    def add_bytes(self, data: bytes, name: str = "upload", limit: bool = True) -> Portrait:
        """Validate and store an image; the same bytes give the same portrait (and its registration)."""
        image = decode_image(data, self.max_upload_bytes if limit else 2**62)
        pid = _digest(data)
        with self._lock:
            known = self._portraits.get(pid)
            if known is not None:
                return known
            target = self.folder / f"{pid}.png"
            if not cv2.imwrite(str(target), image):
                raise DittoError(f"could not write the portrait to the server's folder {self.folder}")
            height, width = image.shape[:2]
            safe_name = "".join(c for c in Path(name).name if c.isalnum() or c in "._- ")[:80] or "upload"
            portrait = Portrait(pid, safe_name, target, width, height)
            self._portraits[pid] = portrait
            return portrait

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
        with self._lock:
            portrait = self._portraits.get(str(pid))
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

    def close(self) -> None:
        with self._lock:
            portraits = list(self._portraits.values())
        for portrait in portraits:
            if portrait.source is not None:
                portrait.source.media.close()
