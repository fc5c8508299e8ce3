"""Small assertion helpers shared by the tests (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

import re
import struct
import zlib

import numpy as np
import torch


def to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def max_abs_err(ours: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| after checking shapes agree."""
    ours_np, ref = to_numpy(ours), np.asarray(ref)
    assert ours_np.shape == ref.shape, f"shape {ours_np.shape} != golden {ref.shape}"
    return float(np.abs(ours_np.astype(np.float64) - ref.astype(np.float64)).max())


def max_rel_err(ours: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (the parity metric the issues state)."""
    scale = float(np.abs(np.asarray(ref)).max()) or 1.0
    return max_abs_err(ours, ref) / scale


def keys_table_seed(golden_dir) -> int:
    """The det_init seed whose fill sums ``state_dict_keys.tsv`` lists (its last header:
    ``sum_of_fill_seed0``)."""
    header = (golden_dir / "state_dict_keys.tsv").read_text().splitlines()[0].split("\t")
    match = re.fullmatch(r"sum_of_fill_seed(\d+)", header[-1])
    assert match, f"state_dict_keys.tsv: last column {header[-1]!r} does not name the fill seed"
    return int(match.group(1))


def official_rows(golden_dir, module: str) -> dict[str, tuple[list[int], str, float]]:
    """``state_dict_keys.tsv`` rows of one module: key -> (shape, dtype, sum of the fill, see
    keys_table_seed)."""
    rows = {}
    for line in (golden_dir / "state_dict_keys.tsv").read_text().splitlines()[1:]:
        name, key, shape, dtype, fill_sum = line.split("\t")
        if name == module:
            rows[key] = ([int(s) for s in shape.strip("[]").split(",") if s.strip()], dtype, float(fill_sum))
    return rows


def synthetic_landmarks(
    center: tuple[float, float] = (256.0, 256.0), size: float = 120.0, frames: int = 1, seed: int = 0
) -> dict[str, np.ndarray]:
    """Arrays of a valid ``face=given`` landmark file: a face of ``size`` pixels around ``center``, the 203
    points spread over its box (their eye / mouth rows land where the crop expects eyes and a mouth:
    the eye rows above the centre, the mouth rows below), ``frames`` source frames drifting by a pixel."""
    rng = np.random.default_rng(seed)
    cx, cy = center
    half = size / 2
    box = np.array([[cx - half, cy - half, cx + half, cy + half, 0.9]], np.float32)
    lmk106 = (rng.uniform(-half, half, (106, 2)) + center).astype(np.float32)
    base = rng.uniform(-0.8 * half, 0.8 * half, (203, 2)).astype(np.float32)
    base[0:24] = [-0.35 * half, -0.25 * half] + rng.normal(0, 2, (24, 2))  # eye A ring
    base[24:48] = [0.35 * half, -0.25 * half] + rng.normal(0, 2, (24, 2))  # eye B ring
    base[48:96] = [0.0, 0.45 * half] + rng.normal(0, 3, (48, 2))  # mouth
    lmk203 = np.stack([base + center + [i, 0] for i in range(frames)]).astype(np.float32)
    lmk478 = np.tile(rng.uniform(0.3, 0.7, (1, 1, 478, 3)).astype(np.float32), (frames, 1, 1, 1))
    return {"det_boxes": box, "lmk106": lmk106, "lmk203": lmk203, "lmk478": lmk478}


def write_landmark_file(path, **kwargs) -> str:
    """Write :func:`synthetic_landmarks` (``kwargs`` passed on) to ``path`` (.npz); returns the path."""
    np.savez(path, **synthetic_landmarks(**kwargs))
    return str(path)


def png_bomb(width: int, height: int, pixel_data: bytes | None = None) -> bytes:
    """A valid 8-bit grayscale PNG declaring ``width`` x ``height`` pixels, all zero, compressed row by row
    (20000x20000 is 0.4 MB and decodes to 1.2 GB as BGR). ``pixel_data`` replaces the IDAT content, e.g. a
    few bytes for a header that claims more than anyone could decode."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    if pixel_data is None:
        deflate, row = zlib.compressobj(9), bytes(width + 1)  # filter byte 0, then the row
        pixel_data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8 bits, grayscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixel_data) + chunk(b"IEND", b"")
