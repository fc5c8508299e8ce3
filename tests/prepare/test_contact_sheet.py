"""contact_sheet / save_contact_sheet: grid size for 0 / 1 / 9 / 100 tiles, crops and captions drawn, labels
kept inside their tile, the "+K more" note, an atomic PNG write, and bad input refused."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from ditto_research.errors import ConfigError, InputError
from ditto_research.prepare.contact_sheet import (
    BACKGROUND,
    PAD,
    STRIP,
    _strip_height,
    contact_sheet,
    save_contact_sheet,
)

FACE = np.ascontiguousarray(data.astronaut()[20:240, 130:350])  # 220x220 face crop


def _tiles(count: int, label: str = "clip") -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(count)
    sizes = [(220, 220), (96, 100), (300, 280)]  # square-ish crops of any size
    return [
        (f"{label}{i:03d}", FACE if i % 4 == 0 else rng.integers(0, 256, (*sizes[i % 3], 3), dtype=np.uint8))
        for i in range(count)
    ]


def _strip(sheet: np.ndarray, index: int, columns: int = 8, tile: int = 128) -> np.ndarray:
    strip = _strip_height(tile)
    x = PAD + (index % columns) * (tile + PAD)
    y = PAD + (index // columns) * (tile + strip + PAD) + tile
    return sheet[y : y + strip, x : x + tile]


@pytest.mark.parametrize("count, rows, cols", [(1, 1, 1), (9, 2, 8), (100, 8, 8)])
def test_the_grid_has_a_cell_per_shown_tile(count, rows, cols):
    sheet = contact_sheet(_tiles(count))
    strip = _strip_height(128)
    assert sheet.dtype == np.uint8
    assert sheet.shape == (rows * (128 + strip + PAD) + PAD, cols * (128 + PAD) + PAD, 3)


def test_no_tiles_give_a_small_image_that_says_so():
    sheet = contact_sheet([])
    assert sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[0] < 64 and sheet.shape[1] <= 256
    assert (sheet > 200).any()  # the light text "no clips" is drawn


def test_crops_fill_their_tiles_and_every_caption_is_drawn():
    tiles = _tiles(9)
    sheet = contact_sheet(tiles)
    expected = cv2.resize(FACE, (128, 128), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(sheet[PAD : PAD + 128, PAD : PAD + 128], expected)
    for index in range(len(tiles)):
        strip = _strip(sheet, index)
        assert (strip != np.array(STRIP, np.uint8)).any(axis=2).sum() > 20, f"caption {index} is blank"


def test_a_long_label_is_cut_to_its_tile():
    tiles = [("a-very-long-label-that-would-run-into-the-next-tile-" * 2, FACE), ("b", FACE)]
    sheet = contact_sheet(tiles)
    strip = _strip_height(128)
    gap = sheet[PAD + 128 : PAD + 128 + strip, PAD + 128 : PAD + 128 + PAD]  # between the two captions
    assert (gap == np.array(BACKGROUND, np.uint8)).all()
    assert not (_strip(sheet, 0)[:, -3:] > 200).any()  # the strip's right margin stays empty


def test_more_tiles_than_shown_are_noted_in_the_last_caption():
    exactly = contact_sheet(_tiles(100)[:64])
    more = contact_sheet(_tiles(100))
    assert more.shape == exactly.shape
    np.testing.assert_array_equal(_strip(more, 62), _strip(exactly, 62))
    assert (_strip(more, 63) != _strip(exactly, 63)).any()  # "+36 more"
    assert contact_sheet(_tiles(20), max_tiles=4).shape[1] == 4 * (128 + PAD) + PAD


@pytest.mark.parametrize("count", [0, 9])
def test_the_png_is_written_atomically_and_reads_back(tmp_path, count):
    target = tmp_path / "sheet.png"
    target.write_bytes(b"an older sheet")
    assert save_contact_sheet(target, _tiles(count)) == target
    read = cv2.imread(str(target), cv2.IMREAD_COLOR)
    assert read is not None
    np.testing.assert_array_equal(cv2.cvtColor(read, cv2.COLOR_BGR2RGB), contact_sheet(_tiles(count)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]  # no temporary file left


def test_a_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        save_contact_sheet(tmp_path / "missing" / "sheet.png", _tiles(1))


@pytest.mark.parametrize(
    "crop",
    [np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 4), np.uint8), np.zeros((0, 64, 3), np.uint8)],
)
def test_a_crop_that_is_not_rgb_uint8_is_refused_by_label(crop):
    with pytest.raises(InputError, match="'bad'"):
        contact_sheet([("ok", FACE), ("bad", crop)])


def test_a_grey_crop_is_shown():
    sheet = contact_sheet([("grey", np.full((50, 50), 200, np.uint8))])
    assert (sheet[PAD : PAD + 128, PAD : PAD + 128] == 200).all()


@pytest.mark.parametrize("kwargs", [{"columns": 0}, {"tile": 8}, {"max_tiles": 0}])
def test_bad_layout_settings_are_refused(kwargs):
    with pytest.raises(ConfigError, match="contact sheet"):
        contact_sheet(_tiles(2), **kwargs)
