"""Paste-back on the run's device (torch): the render never leaves the GPU, only the finished frame does.

The same blend as :class:`~ditto_research.render.putback.PasteBack` (the reference ``PutBack``)::

    m = clip(warpAffine(mask, M_c2o), 0, 1);   r = warpAffine(render, M_c2o)        (bilinear, 0 border)
    frame[roi] = uint8(clip(m * r + (1 - m) * frame[roi], 0, 255))                   (truncating)

with the warps done by ``grid_sample`` on the device instead of OpenCV's fixed-point kernel on the host: pixel
values differ from :class:`PasteBack` (``render.paste=exact``, the reference's frames bit for bit) by at most
one level at some pixels inside the crop (99.98 % identical, tests/pipeline/test_fast_render.py), and are
identical outside it. Per ``M_c2o`` (a still source
repeats one on every frame) the frame box the crop covers, its sampling grid and the warped mask are computed
once and kept on the device; source frames are uploaded once and cached.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ditto_research.face.crop import warp_roi
from ditto_research.render.putback import get_mask

__all__ = ["DevicePasteBack"]


@dataclass(frozen=True, eq=False)
class _DevicePlan:
    roi: tuple[int, int, int, int]  # y0, y1, x0, x1 in the frame
    grid: torch.Tensor  # (1, h, w, 2) normalised crop coordinates of the ROI's pixel centres
    mask: torch.Tensor  # (1, h, w, 1) warped mask in [0, 1]


class DevicePasteBack:
    """Blend rendered crops into their frames on ``device`` (see the module docstring).

    Args:
        device: where the renders are (and the blend runs).
        crop_size: the render's side S (512).
        cache_plans: plans (one per distinct ``M_c2o``) and uploaded frames kept (video sources cycle).
    """

    def __init__(
        self, device: torch.device | str = "cpu", crop_size: int = 512, cache_plans: int = 16
    ) -> None:
        self.device = torch.device(device)
        self.crop_size = crop_size
        mask = torch.from_numpy(np.ascontiguousarray(get_mask(crop_size, crop_size)[:, :, 0]))
        self._mask = mask.to(self.device)[None, None]  # (1, 1, S, S)
        self._capacity = max(1, cache_plans)
        self._plans: OrderedDict[bytes, _DevicePlan] = OrderedDict()
        self._frames: OrderedDict[int, torch.Tensor] = OrderedDict()

    def frame(self, key: int, frame_rgb: np.ndarray) -> torch.Tensor:
        """The (H, W, 3) uint8 source frame ``key`` on the device (uploaded once, then cached)."""
        cached = self._frames.get(key)
        if cached is None:
            cached = torch.from_numpy(np.array(frame_rgb, dtype=np.uint8, copy=True)).to(self.device)
            self._frames[key] = cached
            while len(self._frames) > self._capacity:
                self._frames.popitem(last=False)
        else:
            self._frames.move_to_end(key)
        return cached

    def _plan(self, M_c2o: np.ndarray, frame_hw: tuple[int, int]) -> _DevicePlan:
        key = np.ascontiguousarray(M_c2o[:2], dtype=np.float64).tobytes() + repr(frame_hw).encode()
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        size = self.crop_size
        y0, y1, x0, x1 = warp_roi(M_c2o, (size, size), (frame_hw[1], frame_hw[0]))
        inverse = np.linalg.inv(np.vstack([np.asarray(M_c2o, np.float64)[:2], [0.0, 0.0, 1.0]]))[:2]
        ys, xs = np.mgrid[y0:y1, x0:x1]
        u = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]  # crop pixel coordinates
        v = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
        grid = np.stack([(2 * u + 1) / size - 1, (2 * v + 1) / size - 1], axis=-1)  # pixel centres
        grid_t = torch.from_numpy(grid.astype(np.float32)).to(self.device)[None]
        mask = F.grid_sample(self._mask, grid_t, mode="bilinear", padding_mode="zeros", align_corners=False)
        plan = _DevicePlan((y0, y1, x0, x1), grid_t, mask.clamp_(0, 1).permute(0, 2, 3, 1))
        self._plans[key] = plan
        while len(self._plans) > self._capacity:
            self._plans.popitem(last=False)
        return plan

    @torch.no_grad()
    def __call__(self, frame: torch.Tensor, render: torch.Tensor, M_c2o: np.ndarray) -> torch.Tensor:
        """``frame`` (H, W, 3) uint8 and ``render`` (3, S, S) float in [0, 255], both on the device ->
        (H, W, 3) uint8 on the device (a new tensor; ``frame`` is not modified)."""
        plan = self._plan(M_c2o, (int(frame.shape[0]), int(frame.shape[1])))
        y0, y1, x0, x1 = plan.roi
        result = frame.clone()
        if y1 <= y0 or x1 <= x0:
            return result
        warped = F.grid_sample(
            render[None].float(), plan.grid, mode="bilinear", padding_mode="zeros", align_corners=False
        ).permute(0, 2, 3, 1)[0]  # (h, w, 3)
        roi = result[y0:y1, x0:x1]
        blend = plan.mask[0] * warped + (1 - plan.mask[0]) * roi.float()
        result[y0:y1, x0:x1] = blend.clamp_(0, 255).to(torch.uint8)  # truncation, as astype(np.uint8)
        return result
