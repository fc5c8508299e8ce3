"""Source registration: portrait image or video -> per-frame keypoint info, crop transform, eye state,
appearance.

Per source frame, as the reference ``Source2Info`` does::

    face   = frontend.locate(rgb, previous)                 # detection (first frame) or tracking (video)
    crop   = crop_face(rgb, face, 512, scale 2.3, vy -0.125, rotation)
    eyes   = eye_open / eye_ball_move(frontend.landmarks478(crop))
    rgb256 = resize(crop, 256, INTER_AREA) / 255            # (1, 3, 256, 256)
    x_s_info = motion_extractor(rgb256)                     # pitch, yaw, roll, t, exp, scale, kp
    f_s      = appearance_extractor(rgb256)                 # (1, 32, 16, 64, 64): 8 MB per frame

Videos keep only the 256 crops (196 kB per frame) and compute ``f_s`` on demand through a small LRU cache, so
memory does not hold every frame's appearance volume (the original keeps them all). Per-frame keypoint info of
a video is mean-filtered over ``smo_k_s`` frames.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ditto_research.config.schema import FaceConfig
from ditto_research.face.eye import eye_ball_move, eye_open
from ditto_research.face.frontend import FaceFrontend, FaceLandmarks, crop_face
from ditto_research.media.source import SourceMedia
from ditto_research.pipeline.observers import PipelineObserver, notify

log = logging.getLogger(__name__)

MOTION_OUTPUT_NAMES = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")
CROP_SIZE = 512
NET_SIZE = 256


def to_network_input(crop_rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(512, 512, 3) uint8 crop -> (1, 3, 256, 256) float32 in [0, 1] (INTER_AREA, as the reference)."""
    rgb = (
        crop_rgb
        if crop_rgb.shape[0] == NET_SIZE
        else cv2.resize(crop_rgb, (NET_SIZE, NET_SIZE), interpolation=cv2.INTER_AREA)
    )
    return torch.from_numpy(rgb).to(device).permute(2, 0, 1)[None].float().div_(255.0)


@torch.no_grad()
def motion_info(motion_extractor: nn.Module, image: torch.Tensor) -> dict[str, np.ndarray]:
    """Motion-extractor outputs as the reference's x_s_info dict: (1, 66) bins, t (1, 3), exp/kp (1, 63),
    scale (1, 1)."""
    outputs = motion_extractor(image)
    info = {name: out.detach().float().cpu().numpy() for name, out in zip(MOTION_OUTPUT_NAMES, outputs)}
    info["exp"] = info["exp"].reshape(1, -1)
    info["kp"] = info["kp"].reshape(1, -1)
    return info


@torch.no_grad()
def motion_infos(
    motion_extractor: nn.Module, crops256: Sequence[np.ndarray], device: torch.device | str
) -> list[dict[str, np.ndarray]]:
    """:func:`motion_info` of several 256 crops in one batch (one dict per crop, shaped as for one)."""
    batch = torch.cat([to_network_input(crop, device) for crop in crops256])
    outputs = [out.detach().float().cpu().numpy() for out in motion_extractor(batch)]
    infos = []
    for i in range(len(crops256)):
        info = {name: out[i : i + 1] for name, out in zip(MOTION_OUTPUT_NAMES, outputs)}
        info["exp"] = info["exp"].reshape(1, -1)
        info["kp"] = info["kp"].reshape(1, -1)
        infos.append(info)
    return infos


def mean_filter(values: np.ndarray, kernel: int) -> np.ndarray:
    """Centred moving average over axis 0, the window clipped at both ends (the reference
    ``_mean_filter``)."""
    n, half = values.shape[0], kernel // 2
    cumsum = np.concatenate(
        [np.zeros_like(values[:1], dtype=np.float64), np.cumsum(values, axis=0, dtype=np.float64)]
    )
    starts = np.maximum(np.arange(n) - half, 0)
    stops = np.minimum(np.arange(n) + half + 1, n)
    shape = (-1,) + (1,) * (values.ndim - 1)
    return ((cumsum[stops] - cumsum[starts]) / (stops - starts).reshape(shape)).astype(values.dtype)


@dataclass
class SourceFrame:
    """Registration result of one source frame (small: no appearance volume)."""

    x_s_info: dict[str, np.ndarray]
    M_c2o: np.ndarray
    eye_open: np.ndarray
    eye_ball: np.ndarray
    crop256: np.ndarray


class AppearanceCache:
    """f_s of source frame i, computed on demand and kept for the last ``capacity`` frames (thread-safe)."""

    def __init__(
        self,
        appearance_extractor: nn.Module,
        crops: list[np.ndarray],
        capacity: int,
        device: torch.device | str,
    ) -> None:
        self.net = appearance_extractor
        self.crops = crops
        self.capacity = max(1, capacity)
        self.device = device
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0

    @torch.no_grad()
    def get(self, index: int) -> torch.Tensor:
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        f_s = self.net(to_network_input(self.crops[index], self.device))
        with self._lock:
            self.computed += 1
            self._cache[index] = f_s
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return f_s


@dataclass
class RegisteredSource:
    """Everything the stages need about the source."""

    media: SourceMedia
    frames: list[SourceFrame]
    appearance: AppearanceCache
    is_image: bool
    path: str = ""
    faces_seen: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def sc(self) -> np.ndarray:
        """(63,) source keypoints of the first frame (the LMDM shape condition)."""
        return self.frames[0].x_s_info["kp"].reshape(-1)

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class FrameCrop:
    """One frame seen by the face front-end, before the motion extractor: the located face, the 512 crop with
    its matrices, the (1, 478, 3) crop landmarks, the eye attributes and the 256 network input."""

    index: int
    face: FaceLandmarks
    crop512: np.ndarray
    M_c2o: np.ndarray
    M_o2c: np.ndarray
    lmk478: np.ndarray
    eye_open: np.ndarray
    eye_ball: np.ndarray
    crop256: np.ndarray


@dataclass(frozen=True)
class RegistrationRecord(FrameCrop):
    """What registering one source frame saw (for observers, ``on_source_frame``): the :class:`FrameCrop` (the
    located face, the 512 crop with its matrices — crop -> image ``M_c2o``, image -> crop ``M_o2c`` —, the
    (1, 478, 3) crop landmarks, ...) and the :class:`SourceFrame` kept for rendering (x_s_info before any
    video smoothing)."""

    frame: SourceFrame


def crop_frame(
    rgb: np.ndarray,
    previous: FaceLandmarks | None,
    frontend: FaceFrontend,
    face: FaceConfig,
    label: str = "the source",
    index: int = 0,
) -> FrameCrop:
    """The face-front-end half of :func:`register_frame`: the face located (tracked from ``previous``), the
    512 crop, its 478 landmarks and eye state, the 256 crop the motion extractor takes."""
    located = frontend.locate(rgb, previous, what=label, index=index)
    crop = crop_face(
        rgb,
        located,
        CROP_SIZE,
        face.crop_scale,
        face.crop_vx_ratio,
        face.crop_vy_ratio,
        face.crop_flag_do_rot,
        honour_vx_ratio=face.apply_crop_vx_ratio,
    )
    lmk478 = frontend.landmarks478(crop.img_crop, what=label, index=index)
    if previous is None:  # a detected face (later video frames are tracked from it)
        frontend.check_registered_face(lmk478, what=label)
    crop256 = cv2.resize(crop.img_crop, (NET_SIZE, NET_SIZE), interpolation=cv2.INTER_AREA)
    return FrameCrop(
        index,
        located,
        crop.img_crop,
        crop.M_c2o.astype(np.float32),
        crop.M_o2c.astype(np.float32),
        lmk478,
        eye_open(lmk478).reshape(1, 2),
        eye_ball_move(lmk478).reshape(1, 6),
        crop256,
    )


def record_of(crop: FrameCrop, info: dict[str, np.ndarray]) -> RegistrationRecord:
    """The registration record of ``crop`` given the motion extractor's ``info`` for its 256 crop."""
    frame = SourceFrame(info, crop.M_c2o, crop.eye_open, crop.eye_ball, crop.crop256)
    return RegistrationRecord(**{f.name: getattr(crop, f.name) for f in fields(FrameCrop)}, frame=frame)


def register_frame(
    rgb: np.ndarray,
    previous: FaceLandmarks | None,
    frontend: FaceFrontend,
    motion_extractor: nn.Module,
    face: FaceConfig,
    device: torch.device | str = "cpu",
    label: str = "the source",
    index: int = 0,
) -> RegistrationRecord:
    """Register one frame (see the module docstring): :func:`crop_frame`, then the motion extractor's keypoint
    info. The one per-frame path of registration, and of anything that must see frames exactly as inference
    does (training data)."""
    crop = crop_frame(rgb, previous, frontend, face, label, index)
    return record_of(crop, motion_info(motion_extractor, to_network_input(crop.crop256, device)))


def register_source(
    media: SourceMedia,
    frontend: FaceFrontend,
    motion_extractor: nn.Module,
    appearance_extractor: nn.Module,
    face: FaceConfig,
    device: torch.device | str = "cpu",
    what: str = "the source",
    progress: bool = False,
    cache_frames: int = 8,
    observers: Sequence[PipelineObserver] = (),
) -> RegisteredSource:
    """Register every source frame (see the module docstring); ``observers`` see each one
    (``on_source_frame``)."""
    frames: list[SourceFrame] = []
    previous: FaceLandmarks | None = None
    faces_seen = 1
    for i in tqdm(
        range(media.num_frames), desc="register", disable=not progress or media.is_image, unit="frame"
    ):
        rgb = media.frame(i, mirror=False)
        label = what if media.is_image else f"frame {i} of {what}"
        record = register_frame(rgb, previous, frontend, motion_extractor, face, device, label, i)
        if i == 0:
            faces_seen = record.face.num_faces  # the front-end logs when it picks the largest of several
        frames.append(record.frame)
        if observers:
            notify(observers, "on_source_frame", i, record)
        previous = record.face
    if len(frames) > 1 and face.smo_k_s > 1:
        for key in MOTION_OUTPUT_NAMES:
            smoothed = mean_filter(np.stack([f.x_s_info[key] for f in frames]), face.smo_k_s)
            for frame, value in zip(frames, smoothed):
                frame.x_s_info[key] = value
    cache = AppearanceCache(appearance_extractor, [f.crop256 for f in frames], cache_frames, device)
    return RegisteredSource(media, frames, cache, media.is_image, what, faces_seen)
