"""Paste-back: golden parity, the feathered mask, ROI/caching equivalence with a full-frame blend, and
input checks."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_research.errors import InputError
from ditto_research.face.crop import warp_affine
from ditto_research.render.putback import PasteBack, get_mask


def _level_diff(ours: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    return int(diff.max()), float(diff.mean())


def _full_frame_blend(frame: np.ndarray, render: np.ndarray, M: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The reference recipe on the whole frame (no ROI, no cache), float32 math."""
    size = (frame.shape[1], frame.shape[0])
    m = np.clip(warp_affine(mask, M, size), 0, 1)[:, :, None]
    warped = warp_affine(render, M, size)
    return np.clip(m * warped + (1 - m) * frame, 0, 255).astype(np.uint8)


def test_putback_matches_golden(load_golden) -> None:
    g = load_golden("crop_putback")
    frame = g["img"].copy()
    result = PasteBack()(frame, g["render_image"], g["M_c2o"])
    assert result.dtype == np.uint8 and result.shape == g["result"].shape
    np.testing.assert_array_equal(result, g["result"])  # the reference's float32 blend: bit-exact
    np.testing.assert_array_equal(result, g["result_numpy"])
    np.testing.assert_array_equal(frame, g["img"])  # the input frame is left alone


def test_putback_opencv_backend_is_close(load_golden) -> None:
    """The installed OpenCV: exact with OpenCV >= 5, a few levels off at some pixels with 4.x."""
    g = load_golden("crop_putback")
    result = PasteBack(backend="opencv")(g["img"], g["render_image"], g["M_c2o"])
    max_diff, mean_diff = _level_diff(result, g["result"])
    # Measured with OpenCV 4.11: max 3 levels, mean 0.063 (0 with OpenCV 5); about 2.7x / 4x that allowed.
    assert max_diff <= 8 and mean_diff < 0.25, (max_diff, mean_diff)


@pytest.mark.parametrize(("w", "h", "ratio_w", "ratio_h"), [(512, 512, 0.9, 0.9), (100, 37, 0.5, 0.95)])
def test_mask_shape_bands_and_corners(w: int, h: int, ratio_w: float, ratio_h: float) -> None:
    mask = get_mask(w, h, ratio_w, ratio_h)
    assert mask.shape == (h, w, 1) and mask.dtype == np.float32
    m = mask[:, :, 0]
    x1 = (w - int(w * ratio_w)) // 2
    y1 = (h - int(h * ratio_h)) // 2
    x2, y2 = x1 + int(w * ratio_w), y1 + int(h * ratio_h)
    assert (m[y1:y2, x1:x2] == 1).all()
    assert 0 <= m.min() and m.max() <= 1
    np.testing.assert_array_equal(m[:y1, w // 2], np.linspace(0, 1, y1).astype(np.float32))
    np.testing.assert_array_equal(m[y2:, w // 2], np.linspace(1, 0, h - y2).astype(np.float32))
    np.testing.assert_array_equal(m[h // 2, :x1], np.linspace(0, 1, x1).astype(np.float32))
    np.testing.assert_array_equal(m[h // 2, x2:], np.linspace(1, 0, w - x2).astype(np.float32))
    assert m[0, 0] == 0 and m[0, -1] == 0 and m[-1, 0] == 0 and m[-1, -1] == 0
    if x1 > 1 and y1 > 1:  # a one-pixel band is all border: np.linspace(1, 0, 1) == [1]
        assert m[y1 - 1, x1 - 1] == 1  # the inner corner of the top-left patch
    # Corner patches fall off with the distance from the inner box corner.
    d = np.hypot(np.linspace(1, 0, x1)[None, :], np.linspace(1, 0, y1)[:, None])
    np.testing.assert_allclose(m[:y1, :x1], 1 - np.clip(d, 0, 1), atol=1e-6)


def test_mask_default_is_symmetric_at_512() -> None:
    m = get_mask(512, 512)[:, :, 0]
    np.testing.assert_array_equal(m, m.T)
    assert m[0, 256] == 0 and m[25, 256] == 1 and m[12, 256] == np.float32(12 / 25)


@pytest.mark.parametrize(("frame_hw", "angle"), [((333, 517), 11.0), ((96, 70), -25.0), ((480, 640), 0.0)])
def test_roi_blend_equals_full_frame_blend(frame_hw: tuple[int, int], angle: float) -> None:
    """Only the covered box is computed; the result must equal the whole-frame recipe bit for bit, including
    frames the crop overhangs and widths that are not a multiple of 16."""
    rng = np.random.default_rng(int(frame_hw[0]))
    frame = rng.integers(0, 256, frame_hw + (3,), dtype=np.uint8)
    render = rng.uniform(-5, 260, (64, 64, 3)).astype(np.float32)  # out-of-range values get clipped
    a = np.deg2rad(angle)
    scale = min(frame_hw) / 64 * 0.9
    M = np.array(
        [
            [scale * np.cos(a), -scale * np.sin(a), frame_hw[1] * 0.4],
            [scale * np.sin(a), scale * np.cos(a), frame_hw[0] * 0.1],
            [0, 0, 1],
        ],
        dtype=np.float32,
    )
    paste = PasteBack(crop_size=64)
    result = paste(frame, render, M)
    np.testing.assert_array_equal(result, _full_frame_blend(frame, render, M, paste.mask))
    again = paste(frame, render, M)  # cached plan
    np.testing.assert_array_equal(again, result)
    other_frame = rng.integers(0, 256, frame_hw + (3,), dtype=np.uint8)
    np.testing.assert_array_equal(
        paste(other_frame, render, M), _full_frame_blend(other_frame, render, M, paste.mask)
    )
    assert (result != frame).any()


def test_custom_mask_and_uint8_render() -> None:
    frame = np.full((40, 50, 3), 10, np.uint8)
    render = np.full((16, 16, 3), 250, np.uint8)
    M = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 7.0], [0, 0, 1]])
    result = PasteBack(mask=np.ones((16, 16), np.float32))(frame, render, M)
    assert (result[7:22, 5:20] == 250).all()  # full mask weight: the render replaces the frame
    assert (result[:6] == 10).all() and (result[:, :4] == 10).all()


@pytest.mark.parametrize(
    ("frame", "render", "M", "match"),
    [
        (np.zeros((32, 32, 3), np.float32), None, None, "frame"),
        (np.zeros((32, 32), np.uint8), None, None, "frame"),
        (None, np.zeros((32, 32, 3), np.float32), None, "render"),
        (None, np.zeros((64, 64, 3), np.float64), None, "render"),
        (None, None, np.eye(2), "M_c2o"),
        (None, None, np.full((3, 3), np.inf), "M_c2o"),
    ],
)
def test_putback_rejects_bad_inputs(frame, render, M, match) -> None:
    frame = np.zeros((48, 48, 3), np.uint8) if frame is None else frame
    render = np.zeros((64, 64, 3), np.float32) if render is None else render
    M = np.eye(3) if M is None else M
    with pytest.raises(InputError, match=match):
        PasteBack(crop_size=64)(frame, render, M)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(InputError, match="backend"):
        PasteBack(backend="gpu")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="mask"):
        PasteBack(mask=np.ones((4, 4, 3), np.float32))
    with pytest.raises(InputError, match="get_mask"):
        get_mask(0, 10)
