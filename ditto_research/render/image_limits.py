"""Image sizes checked from the header, before any pixel is decoded, and a decode that fails in one line.

A small file can declare a huge image: a PNG of zeros declaring 20000x20000 pixels is 0.4 MB and decodes to
1.2 GB. So an image's size is read from its header and checked against a :class:`PixelBudget` first; only
then does OpenCV decode it, and any decoder failure (``cv2.error``, no result) is an :class:`InputError`.

Headers are parsed by Pillow's format plugins, called directly: ``Image.open`` would run Pillow's own
decompression-bomb check (a warning over 89 MP, an error over 179 MP) before ours could name the input and
the fix. WebP is parsed here, because Pillow's WebP plugin builds a decoder that allocates the whole canvas.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

# Importing a plugin registers it in Image.OPEN; only the formats below are ever asked.
from PIL import (
    BmpImagePlugin,  # noqa: F401
    Image,
    Jpeg2KImagePlugin,  # noqa: F401
    JpegImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    PpmImagePlugin,  # noqa: F401
    SunImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
)

from ditto_research.errors import InputError

__all__ = [
    "LOCAL_BUDGET",
    "LOCAL_FORMATS",
    "UPLOAD_BUDGET",
    "UPLOAD_FORMATS",
    "ImageHeader",
    "PixelBudget",
    "check_size",
    "checked_header",
    "decode",
    "read_header",
]


@dataclass(frozen=True)
class PixelBudget:
    """The sizes an image may have: each side in ``[min_side, max_side]``, at most ``max_pixels`` in all."""

    min_side: int
    max_side: int
    max_pixels: int


# Uploads to the live server (and the portraits of its config). 8192 a side was already its limit; 50 MP
# takes a full-resolution 48-50 MP phone photo (8160x6120), 150 MB once decoded as BGR, so four uploads
# decoding at once stay under 1 GB (one 20000x20000 bomb took the server from 0.5 to 2.8 GB). 16 a side
# as before.
UPLOAD_BUDGET = PixelBudget(min_side=16, max_side=8192, max_pixels=50_000_000)

# Sources on the command line and dataset rows: the user's own files, so this stops only what no camera
# makes. 200 MP is the largest phone sensor sold (16320x12240); loading one holds ~1.2 GB (BGR and RGB
# copies) for a moment before it is resized to face.max_size. 32768 a side leaves room for panoramas.
LOCAL_BUDGET = PixelBudget(min_side=2, max_side=32768, max_pixels=200_000_000)

# Pillow format ids whose header is read. Uploads: the four formats the server advertises. Local files: also
# the other formats both OpenCV and Pillow read (OpenEXR and Radiance HDR are refused: no header reader).
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
LOCAL_FORMATS = (*UPLOAD_FORMATS, "TIFF", "PPM", "SUN", "JPEG2000")
_NAMES = {"PPM": "PNM", "SUN": "Sun raster", "JPEG2000": "JPEG 2000", "WEBP": "WebP"}

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header declares: format (Pillow's id, e.g. PNG, JPEG, MPO), size, transparency."""

    format: str
    width: int
    height: int
    has_alpha: bool  # an alpha channel or a transparent colour

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _accepts(fmt: str, prefix: bytes) -> bool:
    if fmt == "WEBP":
        return prefix.startswith(b"RIFF") and prefix[8:12] == b"WEBP"
    accept = Image.OPEN[fmt][1]
    result = True if accept is None else accept(prefix)
    return bool(result) and not isinstance(result, str)  # a string: "known, but this build cannot read it"


def _webp_header(head: bytes) -> ImageHeader:
    """Canvas size of a WebP file from its first chunk (RIFF container; VP8, VP8L or VP8X)."""
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy key frame: 14-bit width and height
        width, height = struct.unpack("<HH", head[26:30])
        return ImageHeader("WEBP", width & 0x3FFF, height & 0x3FFF, False)
    if chunk == b"VP8L" and head[20] == 0x2F:  # lossless: 14-bit width - 1, height - 1, alpha hint
        bits = int.from_bytes(head[21:25], "little")
        return ImageHeader("WEBP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1))
    if chunk == b"VP8X" and len(head) >= 30:  # extended: flags, 24-bit canvas width - 1, height - 1
        width, height = (int.from_bytes(head[i : i + 3], "little") + 1 for i in (24, 27))
        return ImageHeader("WEBP", width, height, bool(head[20] & 0x10))
    raise ValueError(f"unknown or truncated WebP chunk {chunk!r}")


def _pillow_header(fmt: str, fp: BinaryIO) -> ImageHeader:
    factory = Image.OPEN[fmt][0]
    # The plugin parses the header only; pixels would be decoded by load(), which is never called.
    with factory(fp, "") as image:
        has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
        return ImageHeader(image.format or fmt, image.width, image.height, has_alpha)


def _stream(image: bytes | Path, what: str) -> BinaryIO:
    if isinstance(image, bytes):
        return io.BytesIO(image)
    try:
        return image.open("rb")
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror or e}; check the path and its permissions") from e


def read_header(image: bytes | Path, what: str, formats: tuple[str, ...] = LOCAL_FORMATS) -> ImageHeader:
    """Format, size and transparency of ``image`` (its bytes or its path) from its header alone.

    ``what`` names the input in messages ("the upload", "source image x.png"). Raises InputError (one line)
    when the image is none of ``formats`` or its header cannot be read.
    """
    with _stream(image, what) as fp:
        prefix = fp.read(32)
        fmt = next((f for f in formats if _accepts(f, prefix)), None)
        if fmt is None:
            names = ", ".join(_NAMES.get(f, f) for f in formats)
            raise InputError(
                f"{what} is not an image in a format read here ({names}); save it as PNG or JPEG"
            )
        fp.seek(0)
        try:
            return _webp_header(fp.read(30)) if fmt == "WEBP" else _pillow_header(fmt, fp)
        # A parser fed untrusted bytes can fail in many ways; each means the header cannot be read.
        except Exception as e:
            raise InputError(
                f"cannot decode {what}: its {_NAMES.get(fmt, fmt)} header is corrupt or truncated "
                f"({_one_line(e)}); re-export it as PNG or JPEG"
            ) from e


def check_size(width: int, height: int, budget: PixelBudget, what: str) -> None:
    """InputError (one line: the input, its size, the budget, the fix) unless ``budget`` allows the size."""
    if min(width, height) < budget.min_side:
        raise InputError(
            f"{what} is {width}x{height} pixels; give one at least {budget.min_side} pixels a side"
        )
    pixels = width * height
    if max(width, height) > budget.max_side or pixels > budget.max_pixels:
        raise InputError(
            f"{what} is {width}x{height} pixels ({pixels / 1e6:.1f} MP), over the limit of "
            f"{budget.max_side} pixels a side and {budget.max_pixels / 1e6:g} MP; downscale it (portraits "
            "are resized to face.max_size, 1920 pixels by default, anyway)"
        )


def checked_header(
    image: bytes | Path, what: str, budget: PixelBudget, formats: tuple[str, ...] = LOCAL_FORMATS
) -> ImageHeader:
    """:func:`read_header`, then :func:`check_size` against ``budget``: nothing is decoded."""
    header = read_header(image, what, formats)
    check_size(header.width, header.height, budget, what)
    return header


def decode(image: bytes | Path, header: ImageHeader, what: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode ``image`` with OpenCV (``cv2.imdecode`` / ``cv2.imread`` with ``flags``) once its ``header``
    was checked (:func:`checked_header`); any decoder failure is an InputError of one line."""
    try:
        if isinstance(image, bytes):
            pixels = cv2.imdecode(np.frombuffer(image, np.uint8), flags)
        else:
            pixels = cv2.imread(str(image), flags)
    except cv2.error as e:  # its ``err`` is the failed check alone, without OpenCV's source location
        reason = " ".join(str(getattr(e, "err", "") or e).split())
        raise InputError(
            f"cannot decode {what}: OpenCV refused it ({reason}); re-export it as PNG or JPEG"
        ) from e
    if pixels is None:
        raise InputError(
            f"cannot decode {what}: the file is corrupt or truncated; re-export it as PNG or JPEG"
        )
    height, width = pixels.shape[:2]
    if height * width != header.pixels:  # EXIF orientation may swap the sides, never change the count
        raise InputError(
            f"cannot decode {what}: its header says {header.width}x{header.height} pixels but it decodes to "
            f"{width}x{height}; re-export it as PNG or JPEG"
        )
    return pixels
