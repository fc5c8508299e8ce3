"""LSE-D / LSE-C lip-sync scores with SyncNet, as joonson/syncnet_python's ``SyncNetInstance.evaluate``.

SyncNet (Chung & Zisserman, "Out of time: automated lip sync in the wild", 2016) embeds 5-frame mouth clips
and 0.2 s MFCC windows into one space where in-sync pairs are close. The scores, for a 25 fps clip whose
frames are already 224 x 224 face crops (see :func:`crop_face_track`) and its 16 kHz audio:

1. ``mfcc`` (13, M): ``python_speech_features.mfcc(audio, 16000)`` with the library defaults, transposed
   (25 ms windows every 10 ms, so 4 MFCC rows per video frame).
2. ``L = min(T, len(audio) // 640) - 5`` windows; window ``v`` pairs frames ``v .. v+4`` (raw 0..255 BGR
   values, no normalisation) with MFCC columns ``4v .. 4v+19``.
3. Lip and audio embeddings (L, 1024) from the two towers.
4. ``dists`` (L, 2 * vshift + 1): row ``i``, column ``j`` = L2 distance (``pairwise_distance``, eps 1e-6)
   between lip embedding ``i`` and audio embedding ``i + j - vshift`` (zero vector outside the clip).
5. ``mean_dists`` = column means; **LSE-D** = min, **LSE-C** = median - min (``torch.median``: the lower
   middle value), **AV offset** = ``vshift - argmin``. A positive offset means the video lags the audio
   (lip frame ``i`` matches the audio of frame ``i - offset``), the convention of :mod:`.sync_proxy` too.

Not reproduced (the reference's ``run_pipeline.py`` + ffmpeg): scene cuts, S3FD face tracks and the
XVID / JPEG round trips of the crops. :func:`crop_face_track` replaces the face tracker; see its docstring.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.errors import CheckpointError, DittoError, InputError

if TYPE_CHECKING:
    from ditto_research.face.frontend import FaceFrontend

__all__ = [
    "CROP_SIZE",
    "SyncNet",
    "SyncScores",
    "crop_face_track",
    "load_syncnet",
    "lse_scores",
    "mfcc_features",
    "scores_from_embeddings",
    "sync_distances",
    "syncnet_embeddings",
]

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
CLIP_FRAMES = 5  # video frames per lip window
MFCC_PER_FRAME = 4  # MFCC rows per video frame (10 ms hop at 25 fps)
MFCC_WINDOW = CLIP_FRAMES * MFCC_PER_FRAME  # 20 MFCC rows per audio window
CROP_SIZE = 224
CROP_PAD_VALUE = 110  # grey used by syncnet_python to pad frames before cropping


# ---- the network ---------------------------------------------------------------------------------------


class _Conv(NamedTuple):
    """One conv -> BatchNorm -> ReLU [-> MaxPool] block of a SyncNet tower (kernel sizes per spatial dim)."""

    c_in: int
    c_out: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...] | int = 1
    padding: tuple[int, ...] | int = 0
    pool: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...] | int] | None = None  # kernel, stride, pad


# Audio tower on (B, 1, 13, 20) MFCC windows -> (B, 512, 1, 1). The first "pool" is a 1x1 stride-1 max pool
# in the original, an identity kept so that the Sequential indices (checkpoint keys) stay the same.
_AUDIO_TOWER = (
    _Conv(1, 64, (3, 3), 1, 1, pool=((1, 1), (1, 1), 0)),
    _Conv(64, 192, (3, 3), 1, 1, pool=((3, 3), (1, 2), 0)),  # -> 11 x 9
    _Conv(192, 384, (3, 3), 1, 1),
    _Conv(384, 256, (3, 3), 1, 1),
    _Conv(256, 256, (3, 3), 1, 1, pool=((3, 3), (2, 2), 0)),  # -> 5 x 4
    _Conv(256, 512, (5, 4)),  # -> 1 x 1
)
# Lip tower on (B, 3, 5, 224, 224) clips -> (B, 512, 1, 1, 1); only the first conv looks across time.
_LIP_TOWER = (
    _Conv(3, 96, (5, 7, 7), (1, 2, 2), 0, pool=((1, 3, 3), (1, 2, 2), 0)),  # -> 1 x 54 x 54
    _Conv(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), pool=((1, 3, 3), (1, 2, 2), (0, 1, 1))),  # -> 13 x 13
    _Conv(256, 256, (1, 3, 3), 1, (0, 1, 1)),
    _Conv(256, 256, (1, 3, 3), 1, (0, 1, 1)),
    _Conv(256, 256, (1, 3, 3), 1, (0, 1, 1), pool=((1, 3, 3), (1, 2, 2), 0)),  # -> 6 x 6
    _Conv(256, 512, (1, 6, 6)),  # -> 1 x 1
)


def _tower(blocks: Sequence[_Conv], dims: Literal[2, 3]) -> nn.Sequential:
    conv, norm, pool = (
        (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)
    )
    layers: list[nn.Module] = []
    for block in blocks:
        layers += [
            conv(block.c_in, block.c_out, block.kernel, block.stride, block.padding),
            norm(block.c_out),
            nn.ReLU(inplace=True),
        ]
        if block.pool is not None:
            kernel, stride, padding = block.pool
            is_identity = all(k == 1 for k in kernel)
            layers.append(nn.Identity() if is_identity else pool(kernel, stride, padding))
    return nn.Sequential(*layers)


def _head(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, embed_dim)
    )


class SyncNet(nn.Module):
    """SyncNet v2 (syncnet_python's ``S``); parameter names are those of ``syncnet_v2.model``.

    Use in eval mode (BatchNorm running statistics); :func:`load_syncnet` returns it so.
    """

    def __init__(self, embed_dim: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = _tower(_AUDIO_TOWER, dims=2)
        self.netfcaud = _head(embed_dim)
        self.netcnnlip = _tower(_LIP_TOWER, dims=3)
        self.netfclip = _head(embed_dim)

    def embed_audio(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC windows -> (B, embed_dim)."""
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def embed_lip(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) clips of raw 0..255 BGR values -> (B, embed_dim)."""
        return self.netfclip(self.netcnnlip(clips).flatten(1))

    def embed_lip_sequence(self, video: torch.Tensor) -> torch.Tensor:
        """(1, 3, T, 224, 224) consecutive frames -> (T - 4, embed_dim): ``embed_lip`` of each 5-frame window.

        Only the first lip conv spans time (5 frames, stride 1), so the tower run once over the sequence
        gives window ``v`` at output time ``v``, without copying each frame into five windows.
        """
        features = self.netcnnlip(video)  # (1, 512, T - 4, 1, 1)
        return self.netfclip(features.flatten(2)[0].T)

    def forward(self, clips: torch.Tensor, mfcc_windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embed_lip(clips), embed_audio(mfcc_windows))``."""
        return self.embed_lip(clips), self.embed_audio(mfcc_windows)


def load_syncnet(path: str | Path, device: torch.device | str = "cpu") -> SyncNet:
    """SyncNet with the weights of ``path`` (a plain state dict such as ``syncnet_v2.model``), in eval mode.

    Raises CheckpointError (one line naming the file) when it is missing, not a weights-only torch file, or
    its keys / shapes are not SyncNet's.
    """
    path = Path(path)
    hint = "expected syncnet_v2.model from joonson/syncnet_python (its download_model.sh)"
    if not path.is_file():
        raise CheckpointError(f"SyncNet weights {path} not found: {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign / corrupt files
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"SyncNet weights {path} cannot be read as a torch state dict ({reason}): {hint}"
        ) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"SyncNet weights {path} hold a {type(state).__name__}, not a state dict of tensors: {hint}"
        )
    net = SyncNet()
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        problems = [
            f"{label} {len(keys)} (e.g. {keys[0]})"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong_shape),
            )
            if keys
        ]
        raise CheckpointError(
            f"SyncNet weights {path} do not match SyncNet v2 ({'; '.join(problems)}): {hint}"
        )
    net.load_state_dict(state)
    return net.to(device).eval()


# ---- scores --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SyncScores:
    """SyncNet scores of one clip: ``lse_d`` (lower is better), ``lse_c`` (higher is better), ``av_offset``
    in frames (positive: video lags audio), ``dists`` (L, 2 vshift + 1) and ``mean_dists`` (2 vshift + 1,)."""

    lse_d: float
    lse_c: float
    av_offset: int
    dists: np.ndarray
    mean_dists: np.ndarray


def mfcc_features(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(13, M) float32 MFCC of mono ``audio`` as SyncNet sees it (python_speech_features defaults, 16 kHz).

    ``audio``: int16 samples, or floats in [-1, 1] (scaled by 32768 to the int16 range: MFCC log energies
    depend on the scale). Other rates are resampled to 16 kHz with a polyphase filter (syncnet_python uses
    ffmpeg's resampler, so resampled audio differs slightly).
    """
    return _mfcc_16k(_as_int16_scale(audio, sample_rate))


def _mfcc_16k(samples: np.ndarray) -> np.ndarray:
    """(13, M) float32 MFCC of 16 kHz samples already in the int16 value range."""
    try:
        import python_speech_features
    except ImportError as e:
        raise DittoError(
            "SyncNet scores need python_speech_features: pip install python_speech_features==0.6"
        ) from e
    return python_speech_features.mfcc(samples, SAMPLE_RATE).T.astype(np.float32)


def _as_int16_scale(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono 16 kHz samples in the int16 value range (int16 kept as is, floats scaled)."""
    samples = np.asarray(audio)
    if samples.ndim != 1 or samples.size == 0:
        raise InputError(f"audio must be a non-empty mono (N,) array, got shape {samples.shape}: mix it down")
    if samples.dtype == np.int16:
        pass
    elif np.issubdtype(samples.dtype, np.floating):
        peak = float(np.abs(samples).max())
        if peak > 2.0:
            raise InputError(
                f"float audio must lie in [-1, 1] (peak {peak:.1f}); pass int16 samples as int16"
            )
        samples = samples.astype(np.float64) * 32768.0
    else:
        raise InputError(f"audio must be int16 or float, got {samples.dtype}")
    if sample_rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        if sample_rate <= 0:
            raise InputError(f"sample_rate must be positive, got {sample_rate}")
        common = math.gcd(SAMPLE_RATE, sample_rate)
        samples = resample_poly(samples.astype(np.float64), SAMPLE_RATE // common, sample_rate // common)
    return samples


@torch.inference_mode()
def syncnet_embeddings(
    frames_bgr: np.ndarray,
    audio: np.ndarray,
    net: SyncNet,
    *,
    sample_rate: int = SAMPLE_RATE,
    batch: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Lip and audio embeddings, (L, 1024) float32 each, of a 25 fps clip (module docstring, steps 1-3).

    ``frames_bgr`` (T, 224, 224, 3) uint8 BGR face crops; ``audio`` mono (see :func:`mfcc_features`);
    ``batch`` windows go through the towers at once (it does not change the result).
    """
    frames = np.asarray(frames_bgr)
    if frames.ndim != 4 or frames.shape[1:] != (CROP_SIZE, CROP_SIZE, 3) or frames.dtype != np.uint8:
        raise InputError(
            f"SyncNet frames must be (T, {CROP_SIZE}, {CROP_SIZE}, 3) uint8 BGR face crops, got "
            f"{frames.shape} {frames.dtype}: crop them with crop_face_track"
        )
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    samples = _as_int16_scale(audio, sample_rate)
    mfcc = torch.from_numpy(_mfcc_16k(samples))
    usable = min(len(frames), len(samples) // SAMPLES_PER_FRAME)
    num_windows = usable - CLIP_FRAMES
    if num_windows < 1:
        raise InputError(
            f"SyncNet needs at least {CLIP_FRAMES + 1} frames of video and audio (0.24 s at "
            f"25 fps); got {len(frames)} frames and {len(samples)} samples at 16 kHz"
        )
    net.eval()  # BatchNorm on running statistics, as SyncNetInstance.evaluate sets it
    device = next(net.parameters()).device
    # (13, M) -> (L, 1, 13, 20): MFCC columns 4v .. 4v+19 for window v.
    mfcc_windows = mfcc.unfold(1, MFCC_WINDOW, MFCC_PER_FRAME)[:, :num_windows].permute(1, 0, 2).unsqueeze(1)
    lip, aud = [], []
    for start in range(0, num_windows, batch):
        stop = min(num_windows, start + batch)
        # (n + 4, H, W, 3) frames -> (1, 3, n + 4, H, W) raw values, as floats only per batch.
        chunk = torch.from_numpy(np.ascontiguousarray(frames[start : stop + CLIP_FRAMES - 1])).to(device)
        lip.append(net.embed_lip_sequence(chunk.permute(3, 0, 1, 2).unsqueeze(0).float()).cpu())
        aud.append(net.embed_audio(mfcc_windows[start:stop].contiguous().to(device)).cpu())
    return torch.cat(lip).numpy(), torch.cat(aud).numpy()


def sync_distances(
    lip: np.ndarray | torch.Tensor, aud: np.ndarray | torch.Tensor, vshift: int = 15
) -> np.ndarray:
    """(L, 2 vshift + 1) float32: L2 distance of lip row ``i`` to audio row ``i + j - vshift`` (0 outside)."""
    lip_t, aud_t = torch.as_tensor(lip), torch.as_tensor(aud)
    if lip_t.ndim != 2 or lip_t.shape != aud_t.shape:
        raise InputError(
            f"lip and audio embeddings must both be (L, D), got {tuple(lip_t.shape)} and {tuple(aud_t.shape)}"
        )
    if vshift < 0:
        raise InputError(f"vshift must be >= 0 frames, got {vshift}")
    width = 2 * vshift + 1
    padded = nn.functional.pad(aud_t, (0, 0, vshift, vshift))
    shifted = padded.unfold(0, width, 1).transpose(1, 2).contiguous()  # (L, width, D)
    dists = nn.functional.pairwise_distance(lip_t.unsqueeze(1).expand_as(shifted).contiguous(), shifted)
    return dists.numpy()


def scores_from_embeddings(lip: np.ndarray, aud: np.ndarray, vshift: int = 15) -> SyncScores:
    """LSE-D, LSE-C and AV offset from (L, D) embeddings (module docstring, steps 4-5)."""
    dists = sync_distances(lip, aud, vshift)
    # Mean over windows of a (width, L) tensor, the reference's layout (keeps its float32 summation order).
    mean_dists = torch.from_numpy(np.ascontiguousarray(dists.T)).mean(1)
    min_dist, min_index = torch.min(mean_dists, 0)
    return SyncScores(
        lse_d=float(min_dist),
        lse_c=float(torch.median(mean_dists) - min_dist),
        av_offset=vshift - int(min_index),
        dists=dists,
        mean_dists=mean_dists.numpy(),
    )


def lse_scores(
    frames_bgr: np.ndarray,
    audio: np.ndarray,
    net: SyncNet,
    vshift: int = 15,
    batch: int = 20,
    *,
    sample_rate: int = SAMPLE_RATE,
) -> SyncScores:
    """SyncNet LSE-D / LSE-C / AV offset of 25 fps face crops (T, 224, 224, 3) uint8 BGR and their audio."""
    lip, aud = syncnet_embeddings(frames_bgr, audio, net, sample_rate=sample_rate, batch=batch)
    return scores_from_embeddings(lip, aud, vshift)


# ---- face crops ----------------------------------------------------------------------------------------


def crop_face_track(
    frames: Sequence[np.ndarray] | np.ndarray,
    *,
    channel_order: Literal["rgb", "bgr"] = "rgb",
    crop_scale: float = 0.4,
    smooth_kernel: int = 13,
    frontend: FaceFrontend | None = None,
) -> np.ndarray:
    """(T, 224, 224, 3) uint8 BGR face crops of a single-face video, cropped like syncnet_python.

    Per frame the face box (x1, y1, x2, y2) gives a half size ``s = max(w, h) / 2`` and a centre (cx, cy);
    these are median-filtered over time (``scipy.signal.medfilt``, ``smooth_kernel`` frames at most), the
    frame is padded with grey 110 by ``s (1 + 2 crop_scale)``, and the window of rows ``cy - s .. cy + s (1 +
    2 crop_scale)`` and columns ``cx -+ s (1 + crop_scale)`` is resized to 224 x 224 (bilinear), as
    ``run_pipeline.py``'s ``crop_video`` does.

    Differences from syncnet_python: the box comes from MediaPipe FaceMesh (the extent of its 478 points,
    which reaches higher up the forehead than S3FD's box, so crops are a little looser) instead of S3FD;
    there is no scene-cut detection and no multi-face tracking (the largest / tracked face is used); frames
    where no face is found take the box interpolated from their neighbours (the reference interpolates inside
    a track too, but drops tracks under 100 frames); and there is no XVID / JPEG re-encoding of the crops.

    ``frames``: (T, H, W, 3) uint8 in ``channel_order``; ``frontend``: a
    :class:`~ditto_research.face.frontend.FaceFrontend` to reuse (default: a MediaPipe one, closed after).
    Raises InputError when no frame has a face.
    """
    from ditto_research.face.factory import make_frontend

    if channel_order not in ("rgb", "bgr"):
        raise InputError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if len(frames) == 0:
        raise InputError("crop_face_track got no frames")
    face_frontend = make_frontend("mediapipe", None) if frontend is None else frontend
    try:
        boxes = _track_boxes(frames, face_frontend, channel_order)
    finally:
        if frontend is None:
            face_frontend.close()
    return crops_along_track(
        frames, boxes, channel_order=channel_order, crop_scale=crop_scale, smooth_kernel=smooth_kernel
    )


def crops_along_track(
    frames: Iterable[np.ndarray],
    boxes: np.ndarray,
    *,
    channel_order: Literal["rgb", "bgr"] = "rgb",
    crop_scale: float = 0.4,
    smooth_kernel: int = 13,
) -> np.ndarray:
    """The crops of :func:`crop_face_track` given the (T, 4) face boxes already tracked (NaN rows are
    interpolated from their neighbours); ``frames`` may be a stream read once (a second decode pass)."""
    from scipy.signal import medfilt

    boxes = np.asarray(boxes, dtype=np.float64)
    found = np.flatnonzero(~np.isnan(boxes[:, 0]))
    if found.size == 0:
        raise InputError(f"no face found in any of the {len(boxes)} frames: SyncNet needs a visible face")
    every = np.arange(len(boxes))
    boxes = np.stack([np.interp(every, found, boxes[found, c]) for c in range(4)], axis=1)
    # A kernel longer than the clip would median zeros from the padding: shorten it to the clip (odd).
    smooth_kernel = max(1, min(smooth_kernel, len(boxes) - (1 - len(boxes) % 2)))
    half = medfilt(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2, smooth_kernel)
    centre_x = medfilt((boxes[:, 0] + boxes[:, 2]) / 2, smooth_kernel)
    centre_y = medfilt((boxes[:, 1] + boxes[:, 3]) / 2, smooth_kernel)
    crops = np.empty((len(boxes), CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    for index, frame in zip(range(len(boxes)), frames):
        bgr = np.asarray(frame) if channel_order == "bgr" else np.asarray(frame)[..., ::-1]
        crops[index] = _crop_one(bgr, half[index], centre_x[index], centre_y[index], crop_scale)
    return crops


def _track_boxes(
    frames: Sequence[np.ndarray] | np.ndarray, frontend: FaceFrontend, channel_order: str
) -> np.ndarray:
    """(T, 4) float64 face boxes, NaN rows where no face was found (:func:`crops_along_track` fills them)."""
    boxes = np.full((len(frames), 4), np.nan)
    previous = None
    for index, frame in enumerate(frames):
        image = np.asarray(frame)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(
                f"frame {index} must be an (H, W, 3) uint8 image, got {image.shape} {image.dtype}"
            )
        rgb = image if channel_order == "rgb" else np.ascontiguousarray(image[..., ::-1])
        try:
            previous = frontend.locate(rgb, previous, what=f"frame {index}")
        except InputError:  # no face in this frame: interpolated below
            previous = None
            continue
        boxes[index] = previous.box
    return boxes


def _crop_one(
    bgr: np.ndarray, half: float, centre_x: float, centre_y: float, crop_scale: float
) -> np.ndarray:
    """syncnet_python's crop of one frame: pad with grey, cut the box below-biased window, resize to 224."""
    import cv2

    pad = int(half * (1 + 2 * crop_scale))
    padded = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(CROP_PAD_VALUE,) * 3)
    cy, cx = centre_y + pad, centre_x + pad
    face = padded[
        int(cy - half) : int(cy + half * (1 + 2 * crop_scale)),
        int(cx - half * (1 + crop_scale)) : int(cx + half * (1 + crop_scale)),
    ]
    if face.size == 0:
        raise InputError(f"empty face crop (box half size {half:.1f} px): the face box is degenerate")
    return cv2.resize(face, (CROP_SIZE, CROP_SIZE))
