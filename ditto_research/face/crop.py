"""Face crop geometry: landmarks -> rotated square crop -> affine matrices, and the bilinear warp behind it.

The crop follows the reference ``core/utils/crop.py`` as ``Source2Info`` calls it:

1. Anchor points: the mean of the left-eye points, of the right-eye points, and of the mouth points.
   The crop's "down" axis ``uy`` points from the eye midpoint to the mouth; ``ux = (uy_y, -uy_x)``.
2. All landmarks are projected on ``(ux, uy)`` around their mean; the box around them, made square with the
   longer side and multiplied by ``scale``, gives the crop size; the box centre moved by ``vy_ratio * size``
   along ``uy`` gives the crop centre.
3. ``M_o2c`` maps the original image to a ``dsize x dsize`` crop (a similarity: scale, optional rotation,
   translation); ``M_c2o`` is its inverse. Both are float32 3x3.

Reference behaviour kept on purpose: the reference ``crop_image`` never passes ``vx_ratio`` on, so the
horizontal shift is always 0 whatever the caller asks for. :func:`crop_image` does the same unless
``honour_vx_ratio=True``.
Landmarks are taken as float32 (what the reference landmark models return), and every step follows NumPy 2's
scalar rules (float32 stays float32) on any NumPy, so the matrices match the golden reference bit for bit.

Warping: OpenCV 4.11 (this project's pin) interpolates in fixed point, while OpenCV 5.0, which made the golden
data, uses a float32 kernel with FMAs. ``backend="exact"`` (the default) reproduces the 5.0 kernel in NumPy
(:class:`AffineSampler`), so the crop and the paste-back match the golden data exactly whatever OpenCV is
installed; ``backend="opencv"`` calls the installed ``cv2.warpAffine`` (several times faster; with 4.11 it is
off by up to ~4 levels at some pixels, more than the golden README's fallback bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from ditto_research.errors import InputError

__all__ = [
    "LANDMARKS_106",
    "LANDMARKS_203",
    "WARP_BACKENDS",
    "AffineSampler",
    "CropLandmarkGroups",
    "CropRect",
    "CropResult",
    "WarpBackend",
    "crop_image",
    "crop_matrix",
    "estimate_crop_rect",
    "transform_points",
    "warp_affine",
    "warp_roi",
]

WarpBackend = Literal["exact", "opencv"]
WARP_BACKENDS: tuple[WarpBackend, ...] = ("exact", "opencv")
# Destination columns OpenCV's warp kernel handles per SIMD step on AVX2 (2 x 8 float lanes); the columns
# past the last full step go through its scalar loop, which computes the source coordinates differently.
_SIMD_COLUMNS = 16
_BLOCK_PIXELS = 16384  # destination pixels per step of AffineSampler.sample (keeps temporaries in cache)
_PAD = 2  # zero border around a source image: neighbours of any out-of-range pixel read zeros


# --------------------------------------------------------------------------------------------------------
# Landmark groups and results


@dataclass(frozen=True)
class CropLandmarkGroups:
    """Which landmark rows locate the two eyes and the mouth for the crop.

    Each group is averaged to one anchor point. Any landmark layout can drive the crop (e.g. MediaPipe's 478
    points) by naming the rows that sit on the same anatomical points as the defaults below.
    """

    left_eye: tuple[int, ...]
    right_eye: tuple[int, ...]
    mouth: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("left_eye", "right_eye", "mouth"):
            group = getattr(self, name)
            if len(group) == 0 or min(group) < 0:
                raise InputError(
                    f"landmark group {name!r} must hold one or more row indices >= 0, got {group}"
                )

    @property
    def min_points(self) -> int:
        """Fewest landmarks an array needs for these indices."""
        return max(self.left_eye + self.right_eye + self.mouth) + 1


# 203-point layout of the reference landmark model (eye rings, then lips).
LANDMARKS_203 = CropLandmarkGroups(left_eye=(0, 6, 12, 18), right_eye=(24, 30, 36, 42), mouth=(48, 66))
# InsightFace 106-point layout (the reference tracks the first frame's crop with it).
LANDMARKS_106 = CropLandmarkGroups(left_eye=(33, 35, 40, 39), right_eye=(87, 89, 94, 93), mouth=(52, 61))


@dataclass(frozen=True)
class CropRect:
    """A rotated square in the original image: ``center`` (2,) float32 pixels, ``size`` float32 side length,
    ``angle`` in radians (rotation of the crop's x axis, clockwise positive in image coordinates)."""

    center: np.ndarray
    size: np.float32
    angle: float


@dataclass(frozen=True)
class CropResult:
    """``img_crop`` (dsize, dsize, 3) uint8; ``M_o2c``/``M_c2o`` (3, 3) float32 (original <-> crop pixels);
    ``pt_crop`` (N, 2) float32, the landmarks in crop pixels."""

    img_crop: np.ndarray
    M_o2c: np.ndarray
    M_c2o: np.ndarray
    pt_crop: np.ndarray


# --------------------------------------------------------------------------------------------------------
# Geometry


def _check_points(pts: np.ndarray, landmarks: CropLandmarkGroups) -> np.ndarray:
    pts = np.asarray(pts)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"landmarks must be an (N, 2) array of x, y pixels, got shape {pts.shape}")
    if pts.shape[0] < landmarks.min_points:
        raise InputError(
            f"landmarks have {pts.shape[0]} points but the crop groups use rows up to "
            f"{landmarks.min_points - 1}; pass matching `landmarks` groups for this layout"
        )
    if not np.issubdtype(pts.dtype, np.number) or not np.isfinite(pts).all():
        raise InputError("landmarks must be finite numbers")
    return pts.astype(np.float32, copy=False)


def estimate_crop_rect(
    pts: np.ndarray,
    scale: float = 2.3,
    vx_ratio: float = 0.0,
    vy_ratio: float = -0.125,
    landmarks: CropLandmarkGroups = LANDMARKS_203,
) -> CropRect:
    """The crop square around (N, 2) landmarks: step 1-2 of the module docstring, in float32.

    ``vx_ratio``/``vy_ratio`` shift the centre along ``ux``/``uy`` by that fraction of the side
    (negative ``vy_ratio`` takes in more forehead).
    """
    pts = _check_points(pts, landmarks)
    eye_left = np.mean(pts[list(landmarks.left_eye)], axis=0)
    eye_right = np.mean(pts[list(landmarks.right_eye)], axis=0)
    eye_mid = (eye_left + eye_right) / 2
    mouth = np.mean(pts[list(landmarks.mouth)], axis=0)

    uy = mouth - eye_mid
    length = np.linalg.norm(uy)
    uy = np.array([0, 1], dtype=np.float32) if length <= 1e-3 else uy / length
    ux = np.array((uy[1], -uy[0]), dtype=np.float32)
    angle = math.acos(min(max(float(ux[0]), -1.0), 1.0))
    if ux[1] < 0:
        angle = -angle

    center0 = np.mean(pts, axis=0)
    projected = (pts - center0) @ np.array([ux, uy]).T  # (N, 2) in the (ux, uy) frame
    low, high = projected.min(axis=0), projected.max(axis=0)
    box_mid = (low + high) / 2
    side = max((high - low)[0], (high - low)[1])
    if not side > 0:
        raise InputError("landmarks collapse to a single point; cannot size the crop")
    size = side * np.float32(scale)

    center = center0 + ux * box_mid[0] + uy * box_mid[1]
    if vx_ratio:
        center = center + ux * (np.float32(vx_ratio) * size)
    center = center + uy * (np.float32(vy_ratio) * size)
    return CropRect(center=center.astype(np.float32), size=np.float32(size), angle=angle)


def crop_matrix(rect: CropRect, dsize: int, flag_do_rot: bool = True) -> np.ndarray:
    """(3, 3) float32 ``M_o2c`` mapping ``rect`` onto a ``dsize`` square (no rotation if not flag_do_rot).

    Every product is float32 x float32, as NumPy 2 evaluates the reference expression.
    """
    s = np.float32(dsize) / rect.size
    half = np.float32(dsize / 2)
    cx, cy = rect.center[0], rect.center[1]
    if flag_do_rot:
        cos_t, sin_t = np.float32(math.cos(rect.angle)), np.float32(math.sin(rect.angle))
        rows = [
            [s * cos_t, s * sin_t, half - s * (cos_t * cx + sin_t * cy)],
            [-s * sin_t, s * cos_t, half - s * (-sin_t * cx + cos_t * cy)],
        ]
    else:
        rows = [[s, np.float32(0), half - s * cx], [np.float32(0), s, half - s * cy]]
    return np.array(rows + [[0, 0, 1]], dtype=np.float32)


def transform_points(pts: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply the affine part of a (2, 3) or (3, 3) matrix to (N, 2) points (row vectors)."""
    return pts @ M[:2, :2].T + M[:2, 2]


def crop_image(
    img: np.ndarray,
    pts: np.ndarray,
    dsize: int = 512,
    scale: float = 2.3,
    vx_ratio: float = 0.0,
    vy_ratio: float = -0.125,
    flag_do_rot: bool = True,
    *,
    landmarks: CropLandmarkGroups = LANDMARKS_203,
    honour_vx_ratio: bool = False,
    backend: WarpBackend = "exact",
) -> CropResult:
    """Crop the face in ``img`` (H, W, 3) uint8 given its (N, 2) landmarks; see the module docstring.

    ``vx_ratio`` is ignored (as in the reference) unless ``honour_vx_ratio``. Areas of the crop outside the
    image are black.
    """
    _check_image(img, "img")
    if not isinstance(dsize, (int, np.integer)) or dsize <= 0:
        raise InputError(f"dsize must be a positive int, got {dsize!r}")
    if not scale > 0:
        raise InputError(f"scale must be > 0, got {scale!r}")
    pts32 = _check_points(pts, landmarks)
    rect = estimate_crop_rect(pts32, scale, vx_ratio if honour_vx_ratio else 0.0, vy_ratio, landmarks)
    m_o2c = crop_matrix(rect, int(dsize), flag_do_rot)
    img_crop = warp_affine(img, m_o2c, (int(dsize), int(dsize)), backend=backend)
    m_c2o = np.linalg.inv(m_o2c)  # computed in float64 by NumPy, returned as float32
    return CropResult(img_crop=img_crop, M_o2c=m_o2c, M_c2o=m_c2o, pt_crop=transform_points(pts32, m_o2c))


def _check_image(img: np.ndarray, name: str) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        shape = getattr(img, "shape", None)
        dtype = getattr(img, "dtype", type(img).__name__)
        raise InputError(f"{name} must be an (H, W, 3) uint8 RGB image, got shape {shape} dtype {dtype}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {img.shape})")


# --------------------------------------------------------------------------------------------------------
# Bilinear affine warp (OpenCV INTER_LINEAR, constant 0 border)


def _invert_affine(M: np.ndarray) -> np.ndarray:
    """(2, 3) float64 inverse of the affine part of ``M``, in the order cv2.warpAffine computes it."""
    m = M[:2].astype(np.float64)
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    inv_det = 1.0 / det if det != 0 else 0.0
    a11, a22 = m[1, 1] * inv_det, m[0, 0] * inv_det
    a12, a21 = -m[0, 1] * inv_det, -m[1, 0] * inv_det
    b1 = -a11 * m[0, 2] - a12 * m[1, 2]
    b2 = -a21 * m[0, 2] - a22 * m[1, 2]
    return np.array([[a11, a12, b1], [a21, a22, b2]])


def _fma32(a: np.ndarray, b: np.ndarray | np.float32, c: np.ndarray) -> np.ndarray:
    """float32 fused multiply-add: the float64 product of two float32 values is exact, so one rounding."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + c).astype(np.float32)


def warp_roi(M: np.ndarray, src_hw: tuple[int, int], dst_wh: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): destination box outside which every pixel samples only border zeros."""
    (h, w), (dst_w, dst_h) = src_hw, dst_wh
    m = M[:2].astype(np.float64)
    if not np.isfinite(m).all() or m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0] == 0:
        return 0, dst_h, 0, dst_w
    corners = np.array([[-1.0, -1.0], [w, -1.0], [-1.0, h], [w, h]])
    mapped = corners @ m[:, :2].T + m[:, 2]
    # A 2-pixel margin covers the float32 rounding of the inverse matrix that the sampler uses.
    x0, y0 = np.floor(mapped.min(axis=0)) - 2
    x1, y1 = np.ceil(mapped.max(axis=0)) + 3
    x0, x1 = (int(np.clip(v, 0, dst_w)) for v in (x0, x1))
    y0, y1 = (int(np.clip(v, 0, dst_h)) for v in (y0, y1))
    return y0, max(y0, y1), x0, max(x0, x1)


@dataclass(frozen=True, eq=False)
class AffineSampler:
    """Precomputed bilinear sampling of one affine warp (reuse it when the matrix repeats, e.g. every frame
    of a still source).

    Reproduces OpenCV 5's float32 ``warpAffine`` INTER_LINEAR kernel with a constant 0 border, bit for bit
    (checked against OpenCV 5.0 on uint8/float32 images of 1-4 channels and many sizes). With ``A`` the
    inverse of ``M`` rounded to float32 and all arithmetic float32:

    - source coordinates ``sx = fma(x, A00, y*A01 + A02)`` (likewise ``sy``); in the columns past the last
      16-wide SIMD step, ``sx = fma(x, A00, y*A01) + A02``;
    - ``ix = floor(sx)``, ``fx = sx - ix``; neighbours outside the source read 0;
    - ``top = fma(fx, p01 - p00, p00)``, ``bottom = fma(fx, p11 - p10, p10)``,
      ``v = fma(fy, bottom - top, top)``; uint8 output rounds half to even.

    Only the destination ``roi`` is computed; every pixel outside it is 0.
    """

    src_hw: tuple[int, int]
    dst_wh: tuple[int, int]
    roi: tuple[int, int, int, int]  # y0, y1, x0, x1 in the destination
    top_left: np.ndarray  # (n,) flat index of p00 in the zero-padded source (p01 +1, p10 +row, p11 +row+1)
    frac_x: np.ndarray  # (n,) float32
    frac_y: np.ndarray  # (n,) float32

    @classmethod
    def build(cls, M: np.ndarray, src_hw: tuple[int, int], dst_wh: tuple[int, int]) -> AffineSampler:
        """Plan the warp of an image of ``src_hw`` (H, W) by ``M`` (src -> dst, 2x3 or 3x3) to ``dst_wh``."""
        h, w = src_hw
        y0, y1, x0, x1 = warp_roi(M, src_hw, dst_wh)
        a, b, c, d, e, f = _invert_affine(M).astype(np.float32).ravel()
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        sx = _fma32(xs, a, ys * b + c)  # (roi_h, roi_w) float32 source coordinates
        sy = _fma32(xs, d, ys * e + f)
        # Columns past the last full SIMD step run OpenCV's scalar loop, which the compiler contracts to
        # fma(x, M0, y*M1) + M2 (checked against OpenCV 5.0).
        k = max(dst_wh[0] // _SIMD_COLUMNS * _SIMD_COLUMNS - x0, 0)
        if k < x1 - x0:
            sx[:, k:] = _fma32(xs[:, k:], a, ys * b) + c
            sy[:, k:] = _fma32(xs[:, k:], d, ys * e) + f

        fx, fy = np.floor(sx), np.floor(sy)
        inside = (fx >= -1) & (fx <= w - 1) & (fy >= -1) & (fy <= h - 1)  # False for NaN too
        frac_x = np.where(inside, sx - fx, 0).astype(np.float32)
        frac_y = np.where(inside, sy - fy, 0).astype(np.float32)
        ix = np.where(inside, fx, -_PAD).astype(np.intp) + _PAD
        iy = np.where(inside, fy, -_PAD).astype(np.intp) + _PAD
        top_left = (iy * (w + 2 * _PAD) + ix).ravel()  # outside pixels read the all-zero corner
        return cls(src_hw, dst_wh, (y0, y1, x0, x1), top_left, frac_x.ravel(), frac_y.ravel())

    def sample(self, src: np.ndarray) -> np.ndarray:
        """Warped values inside ``roi``: (roi_h, roi_w[, C]) with ``src``'s dtype (uint8 rounded, float32)."""
        src = _check_warp_source(src, self.src_hw)
        h, w = self.src_hw
        channels = 1 if src.ndim == 2 else src.shape[2]
        # Channel-first planes keep NumPy's inner loops long (an inner axis of 3 is slow). Pixels go through
        # in blocks whose temporaries stay in cache, with reused buffers (per frame, millions of pixels).
        planes = np.zeros((channels, h + 2 * _PAD, w + 2 * _PAD), dtype=src.dtype)
        planes[:, _PAD:-_PAD, _PAD:-_PAD] = src.reshape(h, w, channels).transpose(2, 0, 1)
        flat = planes.reshape(channels, -1)
        n = self.frac_x.size
        out = np.empty((n, channels), dtype=src.dtype)
        block = max(min(_BLOCK_PIXELS, n), 1)
        row = w + 2 * _PAD
        index = np.empty(block, dtype=np.intp)
        taken = np.empty((4, channels, block), dtype=src.dtype)
        p = taken if src.dtype == np.float32 else np.empty(taken.shape, dtype=np.float32)
        work = np.empty((channels, block), dtype=np.float64)
        for start in range(0, n, block):
            m = min(block, n - start)
            for k, offset in enumerate((0, 1, row, row + 1)):  # p00, p01, p10, p11
                np.add(self.top_left[start : start + m], offset, out=index[:m])
                np.take(flat, index[:m], axis=1, out=taken[k, :, :m], mode="clip")
            if p is not taken:
                np.copyto(p[:, :, :m], taken[:, :, :m], casting="unsafe")
            fx, fy = self.frac_x[start : start + m], self.frac_y[start : start + m]
            top = _lerp(p[0, :, :m], p[1, :, :m], fx, work[:, :m])
            bottom = _lerp(p[2, :, :m], p[3, :, :m], fx, work[:, :m])
            value = _lerp(top, bottom, fy, work[:, :m])  # float32, in top's buffer
            if src.dtype == np.uint8:  # then rounded half to even
                np.clip(np.rint(value, out=value), 0, 255, out=value)
            np.copyto(out[start : start + m].T, value, casting="unsafe")
        y0, y1, x0, x1 = self.roi
        out = out.reshape(y1 - y0, x1 - x0, channels)
        return out[:, :, 0] if src.ndim == 2 else out

    def warp(self, src: np.ndarray) -> np.ndarray:
        """The full destination image (dst_h, dst_w[, C]); zeros outside ``roi``."""
        dst_w, dst_h = self.dst_wh
        out = np.zeros((dst_h, dst_w) + src.shape[2:], dtype=src.dtype)
        y0, y1, x0, x1 = self.roi
        out[y0:y1, x0:x1] = self.sample(src)
        return out


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray, work: np.ndarray) -> np.ndarray:
    """``fma(t, b - a, a)`` on (C, m) float32 planes, written into ``a`` (``b`` is overwritten too).

    The float64 product of two float32 values is exact, so only the sum rounds: once in float64, once to
    float32. That double rounding can differ from a true FMA in about one case in 2**29 (never seen in the
    checks against OpenCV 5.0); for uint8 sources the float64 sum of the first step is exact.
    """
    diff = np.subtract(b, a, out=b)
    np.multiply(t, diff, out=work, dtype=np.float64)  # a float64 loop: the product stays exact
    work += a
    np.copyto(a, work, casting="same_kind")
    return a


def _check_warp_source(src: np.ndarray, src_hw: tuple[int, int] | None = None) -> np.ndarray:
    if not isinstance(src, np.ndarray) or src.dtype not in (np.uint8, np.float32) or src.ndim not in (2, 3):
        raise InputError(
            "warp source must be an (H, W) or (H, W, C) uint8 or float32 array, got "
            f"shape {getattr(src, 'shape', None)} dtype {getattr(src, 'dtype', type(src).__name__)}"
        )
    if src_hw is not None and src.shape[:2] != tuple(src_hw):
        raise InputError(f"warp source is {src.shape[:2]} but the sampler was built for {tuple(src_hw)}")
    return src


def _check_matrix(M: np.ndarray) -> np.ndarray:
    M = np.asarray(M)
    if M.shape not in ((2, 3), (3, 3)) or not np.isfinite(M).all():
        raise InputError(f"affine matrix must be a finite (2, 3) or (3, 3) array, got shape {M.shape}")
    return M


def warp_affine(
    src: np.ndarray, M: np.ndarray, dsize: tuple[int, int], *, backend: WarpBackend = "exact"
) -> np.ndarray:
    """``cv2.warpAffine(src, M[:2], dsize, INTER_LINEAR, BORDER_CONSTANT 0)``; ``dsize`` is (width, height).

    ``backend="exact"`` gives OpenCV 5's float32 kernel bit for bit (see :class:`AffineSampler`);
    ``"opencv"`` calls the installed OpenCV.
    """
    if backend not in WARP_BACKENDS:
        raise InputError(f"unknown warp backend {backend!r}; expected one of {WARP_BACKENDS}")
    _check_warp_source(src)
    M = _check_matrix(M)
    dst_w, dst_h = (int(v) for v in dsize)
    if dst_w <= 0 or dst_h <= 0:
        raise InputError(f"warp dsize must be positive (width, height), got {dsize}")
    if backend == "opencv":
        return cv2.warpAffine(
            src,
            M[:2].astype(np.float64),
            (dst_w, dst_h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    return AffineSampler.build(M, src.shape[:2], (dst_w, dst_h)).warp(src)
