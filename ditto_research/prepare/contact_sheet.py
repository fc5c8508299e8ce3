"""A contact sheet of prepared clips: one face crop per clip in a grid, each with its label underneath.

Layout: ``columns`` tiles a row (fewer when there are fewer tiles), each crop scaled to fit a ``tile`` x
``tile`` square (aspect kept, centred on the dark background), a caption strip below it with the label in
OpenCV's Hershey font, cut to the tile's width. At most ``max_tiles`` are shown; when there are more, the last
caption ends with ``+K more``. No tiles gives a small image saying "no clips". Images are RGB uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ditto_research.atomic import write_path_atomically
from ditto_research.errors import ConfigError, InputError

__all__ = ["contact_sheet", "save_contact_sheet"]

PAD = 2  # pixels between tiles and round the sheet
BACKGROUND = (16, 16, 16)  # RGB behind the tiles
STRIP = (40, 40, 40)  # RGB of the caption strip
TEXT = (235, 235, 235)  # RGB of the caption text
FONT = cv2.FONT_HERSHEY_SIMPLEX
CUT_MARK = ".."  # ends a label that was cut to fit


def _font_scale(tile: int) -> float:
    return 0.35 * tile / 128  # about 18 characters across a tile of any size


def _strip_height(tile: int) -> int:
    (_, height), baseline = cv2.getTextSize("Ag", FONT, _font_scale(tile), 1)
    return height + baseline + 6


def _fit(label: str, width: int, scale: float, suffix: str = "") -> str:
    """``label`` + ``suffix``, the label cut (ending in ``..``) until the text fits ``width`` pixels."""

    def fits(text: str) -> bool:
        return cv2.getTextSize(text, FONT, scale, 1)[0][0] <= width

    text = label + suffix
    if fits(text):
        return text
    for end in range(len(label) - 1, -1, -1):
        text = label[:end] + CUT_MARK + suffix
        if fits(text):
            return text
    return suffix if fits(suffix) else ""


def _as_rgb(label: str, crop: np.ndarray) -> np.ndarray:
    if crop.dtype != np.uint8 or crop.ndim not in (2, 3) or (crop.ndim == 3 and crop.shape[2] != 3):
        raise InputError(
            f"contact sheet tile '{label}' must be (H, W, 3) RGB or (H, W) grey uint8 "
            f"(got shape {crop.shape}, {crop.dtype})"
        )
    if crop.shape[0] == 0 or crop.shape[1] == 0:
        raise InputError(f"contact sheet tile '{label}' is empty (shape {crop.shape})")
    return cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB) if crop.ndim == 2 else crop


def _fitted(crop: np.ndarray, tile: int) -> np.ndarray:
    """``crop`` scaled so its longest side is ``tile``, centred in a ``tile`` x ``tile`` square."""
    height, width = crop.shape[:2]
    scale = tile / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    shrink = new_h < height or new_w < width
    resized = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    square = np.full((tile, tile, 3), BACKGROUND, np.uint8)
    top, left = (tile - new_h) // 2, (tile - new_w) // 2
    square[top : top + new_h, left : left + new_w] = resized
    return square


def _caption(sheet: np.ndarray, text: str, x: int, y: int, width: int, height: int, scale: float) -> None:
    """Draw ``text`` on a dark strip at (x, y) of ``sheet`` (in place)."""
    sheet[y : y + height, x : x + width] = STRIP
    (_, text_h), baseline = cv2.getTextSize(text or "Ag", FONT, scale, 1)
    origin = (x + 3, y + (height + text_h - baseline) // 2)
    cv2.putText(sheet, text, origin, FONT, scale, TEXT, 1, cv2.LINE_AA)


def _no_clips(tile: int) -> np.ndarray:
    height, width = _strip_height(tile) + 2 * PAD, 2 * tile
    sheet = np.full((height, width, 3), BACKGROUND, np.uint8)
    _caption(sheet, "no clips", PAD, PAD, width - 2 * PAD, height - 2 * PAD, _font_scale(tile))
    return sheet


def contact_sheet(
    tiles: Sequence[tuple[str, np.ndarray]], columns: int = 8, tile: int = 128, max_tiles: int = 64
) -> np.ndarray:
    """Grid of labelled face crops as one (H, W, 3) uint8 RGB image.

    Args:
        tiles: ``(label, crop)`` pairs in display order; a crop is (h, w, 3) RGB or (h, w) grey uint8, any
            size (square-ish crops fill their tile; others are centred with a dark border).
        columns: tiles per row (fewer when there are fewer tiles).
        tile: side of each crop's square in pixels; the caption strip below it scales with it.
        max_tiles: tiles shown at most; the last caption says how many more there were.

    Returns:
        ``rows * (tile + strip + PAD) + PAD`` by ``cols * (tile + PAD) + PAD``; with no tiles, a small image
        saying "no clips".

    Raises:
        ConfigError: ``columns``, ``tile`` or ``max_tiles`` out of range.
        InputError: a crop that is not RGB / grey uint8, or empty.
    """
    if columns < 1 or tile < 16 or max_tiles < 1:
        raise ConfigError(
            f"contact sheet needs columns >= 1, tile >= 16 and max_tiles >= 1 "
            f"(got columns={columns}, tile={tile}, max_tiles={max_tiles})"
        )
    if not tiles:
        return _no_clips(tile)
    shown = list(tiles[:max_tiles])
    hidden = len(tiles) - len(shown)
    cols = min(columns, len(shown))
    rows = -(-len(shown) // cols)
    strip, scale = _strip_height(tile), _font_scale(tile)
    cell_h = tile + strip + PAD
    sheet = np.full((rows * cell_h + PAD, cols * (tile + PAD) + PAD, 3), BACKGROUND, np.uint8)
    for index, (label, crop) in enumerate(shown):
        x = PAD + (index % cols) * (tile + PAD)
        y = PAD + (index // cols) * cell_h
        sheet[y : y + tile, x : x + tile] = _fitted(_as_rgb(label, crop), tile)
        suffix = f" +{hidden} more" if hidden and index == len(shown) - 1 else ""
        _caption(sheet, _fit(str(label), tile - 6, scale, suffix), x, y + tile, tile, strip, scale)
    return sheet


def save_contact_sheet(
    path: str | Path,
    tiles: Sequence[tuple[str, np.ndarray]],
    columns: int = 8,
    tile: int = 128,
    max_tiles: int = 64,
) -> Path:
    """Write :func:`contact_sheet` as a PNG at ``path``, atomically (a hidden temporary file in the same
    folder, then a rename: a reader never sees half a file). Returns the path.

    Raises:
        InputError: the folder does not exist or the PNG cannot be written there; as :func:`contact_sheet`.
    """
    target = Path(path)
    sheet = contact_sheet(tiles, columns, tile, max_tiles)
    encoded, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not encoded:
        raise InputError(f"could not encode the contact sheet for {target} as PNG")
    if not target.parent.is_dir():
        raise InputError(f"folder {target.parent} for the contact sheet does not exist; create it first")
    try:
        return write_path_atomically(target, lambda tmp: tmp.write_bytes(png.tobytes()))
    except OSError as e:
        raise InputError(f"could not write the contact sheet {target}: {e}; check the folder") from e
