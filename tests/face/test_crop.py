"""Face crop: golden parity (matrices, landmarks, pixels, both rotation modes), the exact bilinear warp
checked against an independent float64 formula, crop geometry properties, and input checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ditto_research.errors import InputError
from ditto_research.face.crop import (
    LANDMARKS_106,
    LANDMARKS_203,
    AffineSampler,
    CropLandmarkGroups,
    crop_image,
    warp_affine,
)
from tests.helpers import max_abs_err

ROTATION_MODES = [("", True), ("_norot", False)]


def _level_diff(ours: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    return int(diff.max()), float(diff.mean())


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array(
        [[scale * np.cos(a), -scale * np.sin(a), shift[0]], [scale * np.sin(a), scale * np.cos(a), shift[1]]]
    )


def _bilinear_f64(src: np.ndarray, M: np.ndarray, dsize: tuple[int, int]) -> np.ndarray:
    """Plain float64 bilinear warp with a zero border (the textbook formula, no OpenCV rounding)."""
    w_out, h_out = dsize
    inv = cv2.invertAffineTransform(M[:2].astype(np.float64))
    ys, xs = np.mgrid[0:h_out, 0:w_out].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    h, w = src.shape[:2]
    padded = np.zeros((h + 4, w + 4) + src.shape[2:], np.float64)
    padded[2:-2, 2:-2] = src
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    inside = (x0 >= -1) & (x0 <= w - 1) & (y0 >= -1) & (y0 <= h - 1)
    xi = np.where(inside, x0, -2).astype(int) + 2
    yi = np.where(inside, y0, -2).astype(int) + 2
    if src.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = padded[yi, xi] * (1 - fx) + padded[yi, xi + 1] * fx
    bottom = padded[yi + 1, xi] * (1 - fx) + padded[yi + 1, xi + 1] * fx
    return top * (1 - fy) + bottom * fy


# ------------------------------------------------------------------------------------------ golden parity


# The golden's crop_image call (README: crop_putback); only dsize can be read back, from the crop's size.
GOLDEN_CROP = {"scale": 2.3, "vx_ratio": 0, "vy_ratio": -0.125}


def _ulps(ref: np.ndarray, count: int) -> float:
    """``count`` float32 units in the last place at max |ref|: rounding noise of a reordered float32 sum."""
    return count * float(np.spacing(np.abs(ref).max().astype(np.float32)))


@pytest.mark.parametrize(("suffix", "rotate"), ROTATION_MODES)
def test_crop_matches_golden(load_golden, suffix: str, rotate: bool) -> None:
    g = load_golden("crop_putback")
    dsize = g["img_crop" + suffix].shape[0]
    res = crop_image(g["img"], g["pts"], dsize=dsize, flag_do_rot=rotate, **GOLDEN_CROP)
    for key in ("M_o2c", "M_c2o", "pt_crop"):
        ours = getattr(res, key)
        assert ours.dtype == np.float32
        # The reference's float32 steps in its order: measured bit-identical.
        np.testing.assert_array_equal(ours, g[key + suffix], err_msg=key)
    assert res.img_crop.dtype == np.uint8
    np.testing.assert_array_equal(res.img_crop, g["img_crop" + suffix])
    # The golden crop goes past the image border: part of it must be black fill.
    assert (res.img_crop == 0).all(axis=2).any()


@pytest.mark.parametrize(("suffix", "rotate"), ROTATION_MODES)
def test_crop_opencv_backend_is_close(load_golden, suffix: str, rotate: bool) -> None:
    """The installed OpenCV's kernel: exact with OpenCV >= 5, a few levels off with 4.x's fixed-point one."""
    g = load_golden("crop_putback")
    dsize = g["img_crop" + suffix].shape[0]
    res = crop_image(g["img"], g["pts"], dsize=dsize, flag_do_rot=rotate, backend="opencv", **GOLDEN_CROP)
    np.testing.assert_array_equal(res.M_o2c, g["M_o2c" + suffix])
    max_diff, mean_diff = _level_diff(res.img_crop, g["img_crop" + suffix])
    # Measured with OpenCV 4.11: max 4 levels, mean 0.13 (0 with OpenCV 5); about 2x / 4x that allowed.
    assert max_diff <= 8 and mean_diff < 0.5, (max_diff, mean_diff)


# ------------------------------------------------------------------------------------------ the exact warp


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize(
    ("src_hw", "dst_wh"), [((37, 53), (45, 29)), ((64, 40), (70, 83)), ((20, 20), (7, 5))]
)
def test_exact_warp_matches_plain_bilinear(dtype, src_hw, dst_wh) -> None:
    """Random affine maps, sizes that exercise OpenCV's scalar tail columns (width not a multiple of 16)."""
    rng = np.random.default_rng(sum(src_hw) + sum(dst_wh))
    src = rng.integers(0, 256, src_hw + (3,)).astype(dtype)
    M = _similarity(rng.uniform(-40, 40), rng.uniform(0.7, 1.6), (rng.uniform(-10, 20), rng.uniform(-10, 20)))
    M[0, 1] += 0.05  # a general affine map, not only a similarity
    ours = warp_affine(src, M, dst_wh)
    ref = _bilinear_f64(src, M, dst_wh)
    assert ours.shape == (dst_wh[1], dst_wh[0], 3) and ours.dtype == dtype
    if dtype == np.uint8:
        assert np.abs(ours.astype(np.float64) - ref).max() <= 0.5 + 1e-3  # rounding only
    else:
        np.testing.assert_allclose(ours, ref, atol=1e-3)
    assert (ours != 0).any()


def test_exact_warp_integer_shift_equals_opencv() -> None:
    """With integer offsets both kernels copy pixels exactly, so they must agree bit for bit."""
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, (31, 47, 3), dtype=np.uint8)
    M = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -3.0]])
    np.testing.assert_array_equal(
        warp_affine(src, M, (50, 33)), cv2.warpAffine(src, M, (50, 33), flags=cv2.INTER_LINEAR)
    )


def test_sampler_roi_and_single_channel() -> None:
    src = np.full((10, 12), 7.0, dtype=np.float32)
    M = np.array([[1.0, 0.0, 30.0], [0.0, 1.0, 20.0]])  # the source lands at x 30..41, y 20..29
    sampler = AffineSampler.build(M, src.shape, (64, 48))
    y0, y1, x0, x1 = sampler.roi
    assert 0 < y0 <= 19 and 30 <= y1 < 48 and 0 < x0 <= 29 and 42 <= x1 < 64
    full = sampler.warp(src)
    assert full.shape == (48, 64)
    assert (full[20:30, 30:42] == 7.0).all() and full.sum() == pytest.approx(7.0 * 120)
    np.testing.assert_array_equal(full, warp_affine(src, M, (64, 48)))


# ------------------------------------------------------------------------------------------ crop geometry


def _face_points(load_golden) -> np.ndarray:
    return load_golden("crop_putback")["pts"].astype(np.float64)


def test_crop_past_border_is_black_and_inside_is_copied() -> None:
    img = np.full((120, 90, 3), 200, dtype=np.uint8)
    rng = np.random.default_rng(3)
    pts = rng.uniform(-5, 25, (203, 2)).astype(np.float32)  # a "face" at the top-left corner
    res = crop_image(img, pts, dsize=128)
    ys, xs = np.mgrid[0:128, 0:128].astype(np.float64)
    src_x = res.M_c2o[0, 0] * xs + res.M_c2o[0, 1] * ys + res.M_c2o[0, 2]
    src_y = res.M_c2o[1, 0] * xs + res.M_c2o[1, 1] * ys + res.M_c2o[1, 2]
    outside = (src_x < -1.5) | (src_y < -1.5) | (src_x > 90.5) | (src_y > 120.5)
    inside = (src_x > 1) & (src_y > 1) & (src_x < 88) & (src_y < 118)
    assert outside.any() and inside.any()
    assert (res.img_crop[outside] == 0).all()
    assert (res.img_crop[inside] == 200).all()


def test_crop_of_non_square_image_is_invariant_to_moving_the_face(load_golden) -> None:
    """Roll correction: rotating, scaling and moving the face in a non-square image gives the same crop
    landmarks (rotation mode), and the matrices stay inverse to each other."""
    pts = _face_points(load_golden)
    base = crop_image(np.zeros((480, 640, 3), np.uint8), pts.astype(np.float32), dsize=256)
    M = _similarity(17.0, 0.8, (40.0, 300.0))
    moved = (pts @ M[:, :2].T + M[:, 2]).astype(np.float32)
    img = np.zeros((700, 300, 3), np.uint8)
    res = crop_image(img, moved, dsize=256)
    assert res.img_crop.shape == (256, 256, 3)
    np.testing.assert_allclose(res.pt_crop, base.pt_crop, atol=0.02)
    np.testing.assert_allclose(res.M_c2o @ res.M_o2c, np.eye(3), atol=1e-4)
    # The eye-to-mouth axis is vertical in the crop.
    eyes = res.pt_crop[list(LANDMARKS_203.left_eye + LANDMARKS_203.right_eye)].mean(axis=0)
    mouth = res.pt_crop[list(LANDMARKS_203.mouth)].mean(axis=0)
    assert abs(mouth[0] - eyes[0]) < 1e-2 and mouth[1] > eyes[1]
    # Without rotation the map is a pure scale + shift, so the face keeps its 17 degree tilt.
    norot = crop_image(img, moved, dsize=256, flag_do_rot=False)
    assert norot.M_o2c[0, 1] == 0 and norot.M_o2c[1, 0] == 0 and norot.M_o2c[0, 0] == norot.M_o2c[1, 1]


def test_vx_ratio_is_ignored_unless_honoured(load_golden) -> None:
    g = load_golden("crop_putback")
    base = crop_image(g["img"], g["pts"])
    ignored = crop_image(g["img"], g["pts"], vx_ratio=0.3)
    np.testing.assert_array_equal(ignored.M_o2c, base.M_o2c)
    np.testing.assert_array_equal(ignored.img_crop, base.img_crop)
    honoured = crop_image(g["img"], g["pts"], vx_ratio=0.3, honour_vx_ratio=True)
    # The crop centre moves by 0.3 * size along the crop's x axis: points move left by 0.3 * dsize.
    np.testing.assert_allclose(honoured.pt_crop, base.pt_crop - [0.3 * 512, 0.0], atol=1e-2)


def test_custom_landmark_groups_select_the_same_points(load_golden) -> None:
    """A different layout (here: the 203 points reversed) crops the same once the groups name its rows."""
    g = load_golden("crop_putback")
    n = len(g["pts"])

    def flip(idx: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(n - 1 - i for i in idx)

    groups = CropLandmarkGroups(
        left_eye=flip(LANDMARKS_203.left_eye),
        right_eye=flip(LANDMARKS_203.right_eye),
        mouth=flip(LANDMARKS_203.mouth),
    )
    res = crop_image(g["img"], g["pts"][::-1], landmarks=groups, dsize=g["img_crop"].shape[0], **GOLDEN_CROP)
    # The eye/lip means sum the points in reverse order: measured 1 ulp at max |ref| (M_o2c 3.1e-5,
    # pt_crop 6.1e-5); 4 ulps allowed.
    assert max_abs_err(res.M_o2c, g["M_o2c"]) <= _ulps(g["M_o2c"], 4)
    assert max_abs_err(res.pt_crop[::-1], g["pt_crop"]) <= _ulps(g["pt_crop"], 4)
    assert _level_diff(res.img_crop, g["img_crop"])[0] <= 1
    assert LANDMARKS_106.min_points == 95 and LANDMARKS_203.min_points == 67


# ------------------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    ("img", "pts", "kwargs", "match"),
    [
        (np.zeros((64, 64), np.uint8), None, {}, "uint8 RGB image"),
        (np.zeros((64, 64, 3), np.float32), None, {}, "uint8 RGB image"),
        (np.zeros((64, 64, 4), np.uint8), None, {}, "uint8 RGB image"),
        (None, np.zeros((203, 3), np.float32), {}, r"\(N, 2\)"),
        (None, np.zeros((50, 2), np.float32), {}, "rows up to 66"),
        (None, np.full((203, 2), np.nan, np.float32), {}, "finite"),
        (None, np.ones((203, 2), np.float32), {}, "single point"),
        (None, None, {"dsize": 0}, "dsize"),
        (None, None, {"scale": -1.0}, "scale"),
        (None, None, {"backend": "cuda"}, "backend"),
    ],
)
def test_crop_rejects_bad_inputs(img, pts, kwargs, match) -> None:
    good_pts = np.random.default_rng(0).uniform(10, 50, (203, 2)).astype(np.float32)
    img = np.zeros((64, 64, 3), np.uint8) if img is None else img
    pts = good_pts if pts is None else pts
    with pytest.raises(InputError, match=match):
        crop_image(img, pts, **kwargs)


def test_bad_groups_and_warp_inputs() -> None:
    with pytest.raises(InputError, match="left_eye"):
        CropLandmarkGroups(left_eye=(), right_eye=(1,), mouth=(2,))
    with pytest.raises(InputError, match="matrix"):
        warp_affine(np.zeros((4, 4), np.float32), np.eye(2), (4, 4))
    with pytest.raises(InputError, match="float32"):
        warp_affine(np.zeros((4, 4), np.float64), np.eye(3), (4, 4))
    with pytest.raises(InputError, match="sampler was built"):
        AffineSampler.build(np.eye(3), (4, 4), (4, 4)).sample(np.zeros((5, 4), np.float32))
