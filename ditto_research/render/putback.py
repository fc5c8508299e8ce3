"""Paste a rendered crop back into the full frame through a feathered mask.

Per frame (reference ``core/atomic_components/putback.py``, ``PutBack``):

1. ``mask_warped = clip(warpAffine(mask, M_c2o[:2], frame size), 0, 1)`` and
   ``render_warped = warpAffine(render, M_c2o[:2], frame size)`` (INTER_LINEAR, constant 0 border);
2. ``result = uint8(clip(m * render_warped + (1 - m) * frame, 0, 255))`` in float32, truncating.

Only the part of the frame that the crop covers is computed: outside it ``m = 0`` and the warped render is 0,
so the result there is the frame itself, bit for bit. The warp plan and the warped mask are cached for the
last ``M_c2o``, which a still source repeats on every frame. The warps default to the ``exact`` backend of
:func:`ditto_research.face.crop.warp_affine` (OpenCV 5's kernel, bit-exact with the golden data);
``backend="opencv"`` is about twice as fast with OpenCV 4.11 but off by a few levels at some pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ditto_research.errors import InputError
from ditto_research.face.crop import WARP_BACKENDS, AffineSampler, WarpBackend, warp_affine, warp_roi

__all__ = ["PasteBack", "get_mask"]

_BLEND_BLOCK_PIXELS = 16384  # frame pixels per blend step (keeps the float32 temporaries in cache)


def _ramp(n: int, rising: bool) -> np.ndarray:
    """(n,) float64 from 0 to 1 (or 1 to 0), as ``np.linspace`` spaces it."""
    return np.linspace(0, 1, n) if rising else np.linspace(1, 0, n)


def _corner(across: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Corner patch: 1 minus the distance from the inner corner, where ``across``/``down`` are per-column /
    per-row distances in band units (1 at the image border, 0 at the inner edge)."""
    dist = np.sqrt(across[None, :] ** 2 + down[:, None] ** 2).astype(np.float32)
    return 1 - np.clip(dist, 0, 1)


def get_mask(w: int, h: int, ratio_w: float = 0.9, ratio_h: float = 0.9) -> np.ndarray:
    """Feathered paste-back mask, (h, w, 1) float32 in [0, 1] (the reference ``get_mask`` layout).

    The inner ``int(w * ratio_w) x int(h * ratio_h)`` box is 1. Each side band ramps linearly from 0 at the
    border to 1 next to the box; each corner falls off with the Euclidean distance from the box corner.
    """
    if w <= 0 or h <= 0 or not (0 < ratio_w <= 1 and 0 < ratio_h <= 1):
        raise InputError(f"get_mask needs w, h > 0 and ratios in (0, 1], got {w}, {h}, {ratio_w}, {ratio_h}")
    inner_w, inner_h = int(w * ratio_w), int(h * ratio_h)
    x1 = (w - inner_w) // 2
    x2 = x1 + inner_w
    y1 = (h - inner_h) // 2
    y2 = y1 + inner_h
    mask = np.ones((h, w), dtype=np.float32)
    # Side bands: sqrt(r**2) == |r| exactly, so the ramps go in as they are.
    mask[:y1, x1:x2] = _ramp(y1, rising=True)[:, None].astype(np.float32)
    mask[y2:, x1:x2] = _ramp(h - y2, rising=False)[:, None].astype(np.float32)
    mask[y1:y2, :x1] = _ramp(x1, rising=True)[None, :].astype(np.float32)
    mask[y1:y2, x2:] = _ramp(w - x2, rising=False)[None, :].astype(np.float32)
    # Corners: distances grow towards the image border.
    left, right = _ramp(x1, rising=False), _ramp(w - x2, rising=True)
    top, bottom = _ramp(y1, rising=False), _ramp(h - y2, rising=True)
    mask[:y1, :x1] = _corner(left, top)
    mask[:y1, x2:] = _corner(right, top)
    mask[y2:, :x1] = _corner(left, bottom)
    mask[y2:, x2:] = _corner(right, bottom)
    return mask[:, :, None]


def _blend_into(frame_roi: np.ndarray, mask: np.ndarray, inv_mask: np.ndarray, rendered: np.ndarray) -> None:
    """``frame_roi[:] = uint8(clip(mask * rendered + inv_mask * frame_roi, 0, 255))``, float32 in the
    reference's operation order, in row blocks whose temporaries stay in cache (overwrites ``rendered``)."""
    rows = max(_BLEND_BLOCK_PIXELS // max(frame_roi.shape[1], 1), 1)
    scratch = np.empty((rows,) + frame_roi.shape[1:], dtype=np.float32)
    for r0 in range(0, frame_roi.shape[0], rows):
        r1 = min(r0 + rows, frame_roi.shape[0])
        blend = np.multiply(mask[r0:r1], rendered[r0:r1], out=rendered[r0:r1])
        blend += np.multiply(inv_mask[r0:r1], frame_roi[r0:r1], out=scratch[: r1 - r0])
        np.clip(blend, 0, 255, out=blend)
        frame_roi[r0:r1] = blend  # float -> uint8 assignment truncates, as astype(np.uint8) does


@dataclass(frozen=True, eq=False)
class _Plan:
    """What one ``M_c2o`` fixes: the frame ROI (y0, y1, x0, x1) the crop covers, the exact sampler (None with
    the OpenCV backend), and the warped mask ``m`` and ``1 - m`` in the ROI, (h, w, 3) float32 each (repeated
    over channels so the blend runs on same-shape arrays)."""

    roi: tuple[int, int, int, int]
    sampler: AffineSampler | None
    mask: np.ndarray
    inv_mask: np.ndarray


class PasteBack:
    """Blend a rendered crop into its source frame (see the module docstring).

    ``mask`` is an (S, S) float32 weight in [0, 1] at crop resolution (default ``get_mask(S, S)[..., 0]``
    with ``S = crop_size``); ``backend`` picks the warp (:func:`ditto_research.face.crop.warp_affine`).
    """

    def __init__(
        self, mask: np.ndarray | None = None, *, crop_size: int = 512, backend: WarpBackend = "exact"
    ) -> None:
        if backend not in WARP_BACKENDS:
            raise InputError(f"unknown warp backend {backend!r}; expected one of {WARP_BACKENDS}")
        if mask is None:
            mask = get_mask(crop_size, crop_size)[:, :, 0]
        mask = np.asarray(mask)
        if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.floating):
            raise InputError(f"paste-back mask must be a 2-D float array, got {mask.shape} {mask.dtype}")
        self.mask = np.ascontiguousarray(mask, dtype=np.float32)
        self.backend: WarpBackend = backend
        self._cached_key: bytes | None = None
        self._cached_plan: _Plan | None = None

    def _plan(self, M_c2o: np.ndarray, frame_hw: tuple[int, int]) -> _Plan:
        """Sampler, ROI and warped mask for this matrix and frame size (cached for the last pair)."""
        key = np.ascontiguousarray(M_c2o[:2], dtype=np.float64).tobytes() + repr(frame_hw).encode()
        if key == self._cached_key and self._cached_plan is not None:
            return self._cached_plan
        dst_wh = (frame_hw[1], frame_hw[0])
        if self.backend == "exact":
            sampler: AffineSampler | None = AffineSampler.build(M_c2o, self.mask.shape, dst_wh)
            roi = sampler.roi
            mask_roi = sampler.sample(self.mask)
        else:
            sampler, roi = None, warp_roi(M_c2o, self.mask.shape, dst_wh)
            y0, y1, x0, x1 = roi
            mask_roi = warp_affine(self.mask, M_c2o, dst_wh, backend="opencv")[y0:y1, x0:x1]
        mask3 = np.repeat(np.clip(mask_roi, 0, 1)[:, :, None], 3, axis=2)
        self._cached_key, self._cached_plan = key, _Plan(roi, sampler, mask3, 1 - mask3)
        return self._cached_plan

    def __call__(self, frame_rgb: np.ndarray, render_image: np.ndarray, M_c2o: np.ndarray) -> np.ndarray:
        """``frame_rgb`` (H, W, 3) uint8, ``render_image`` (S, S, 3) float32 in [0, 255] (uint8 also taken),
        ``M_c2o`` (3, 3) crop -> frame -> (H, W, 3) uint8 (a new array; the frame is not modified)."""
        self._check(frame_rgb, render_image, M_c2o)
        h, w = frame_rgb.shape[:2]
        plan = self._plan(M_c2o, (h, w))
        y0, y1, x0, x1 = plan.roi
        if plan.sampler is not None:
            rendered = plan.sampler.sample(render_image)
        else:
            rendered = warp_affine(render_image, M_c2o, (w, h), backend="opencv")[y0:y1, x0:x1]
        result = frame_rgb.copy()
        if rendered.dtype != np.float32:
            rendered = rendered.astype(np.float32)
        _blend_into(result[y0:y1, x0:x1], plan.mask, plan.inv_mask, rendered)
        return result

    def _check(self, frame_rgb: np.ndarray, render_image: np.ndarray, M_c2o: np.ndarray) -> None:
        if (
            not isinstance(frame_rgb, np.ndarray)
            or frame_rgb.dtype != np.uint8
            or frame_rgb.ndim != 3
            or frame_rgb.shape[2] != 3
        ):
            raise InputError(
                "frame must be an (H, W, 3) uint8 image, got "
                f"{getattr(frame_rgb, 'shape', None)} "
                f"{getattr(frame_rgb, 'dtype', type(frame_rgb).__name__)}"
            )
        expected = self.mask.shape + (3,)
        if (
            not isinstance(render_image, np.ndarray)
            or render_image.shape != expected
            or render_image.dtype not in (np.float32, np.uint8)
        ):
            raise InputError(
                f"render must be a {expected} float32 (or uint8) image matching the mask, got "
                f"{getattr(render_image, 'shape', None)} "
                f"{getattr(render_image, 'dtype', type(render_image).__name__)}"
            )
        M = np.asarray(M_c2o)
        if M.shape not in ((2, 3), (3, 3)) or not np.isfinite(M).all():
            raise InputError(f"M_c2o must be a finite (3, 3) or (2, 3) matrix, got shape {M.shape}")
