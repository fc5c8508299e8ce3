"""Video quality against ground truth, as talking-head papers report it for self-reconstruction (HDTF, ...).

==========================  ==================================================================================
name                        what it is
==========================  ==================================================================================
:func:`psnr`, :func:`ssim`  one generated frame against the ground-truth frame of the same index
:class:`FrameScores`        running mean / std of PSNR and SSIM over a clip, one frame pair at a time
:class:`FeatureStats`       streaming mean and covariance of features (count, sum, sum of outer products)
:func:`frechet_distance`    Fréchet distance of two :class:`FeatureStats`: FID with Inception, FVD with I3D
:class:`InceptionFeatures`  the FID InceptionV3 TorchScript (2048-d pool features) from a user file
:class:`I3DFeatures`        the FVD I3D TorchScript (400-d pre-softmax output) from a user file
:func:`fvd_clips`           cuts a frame stream into the 16-frame clips FVD embeds
==========================  ==================================================================================

Frames everywhere are RGB ``uint8`` arrays (H, W, 3), as decoded from the videos (gamma-encoded sRGB, no
colour conversion, no Y channel). Nothing here crops, aligns or resizes the pair: the caller gives the
generated frame and the ground-truth frame with the same index, the same crop (full frame or the same face
crop) and the same resolution. The feature networks resize inside, as their references do.

Weights are never downloaded: the user names the files. Both networks are TorchScript archives (read with
``torch.jit.load``, not unpickled) and are probed once on load, so a wrong file is one :class:`InputError`.
"""

from __future__ import annotations

import math
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from skimage.metrics import structural_similarity

from ditto_research.errors import InputError

__all__ = [
    "FID_FEATURES",
    "FVD_CLIP_FRAMES",
    "FVD_FEATURES",
    "SSIM_OPTIONS",
    "FeatureStats",
    "FrameScores",
    "I3DFeatures",
    "InceptionFeatures",
    "frechet_distance",
    "fvd_clips",
    "psnr",
    "ssim",
]

DATA_RANGE = 255.0
# Wang et al. 2004 ("Image quality assessment: from error visibility to structural similarity"): an 11 x 11
# Gaussian window of sigma 1.5 (skimage truncates at 3.5 sigma), K1 = 0.01, K2 = 0.03 (skimage's defaults),
# population (not sample) covariances. skimage averages the SSIM map after dropping a 5-pixel border, then
# averages the three channels.
SSIM_OPTIONS = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
SSIM_MIN_SIDE = 11  # the Gaussian window: smaller frames have no valid SSIM

FID_FEATURES = 2048  # InceptionV3 pool_3
FVD_FEATURES = 400  # I3D Kinetics-400 output before the softmax
FVD_CLIP_FRAMES = 16  # StyleGAN-V's FVD16 (and the original TF FVD's clip length)
FRECHET_EPS = 1e-6  # pytorch-fid: added to both diagonals when sqrtm of the product is not finite


# ---- per-frame fidelity --------------------------------------------------------------------------------


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both frames as RGB uint8 (H, W, 3) of the same size, or InputError."""
    for name, frame in (("generated", pred), ("ground-truth", ref)):
        if (
            not isinstance(frame, np.ndarray)
            or frame.dtype != np.uint8
            or frame.ndim != 3
            or frame.shape[2] != 3
        ):
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise InputError(f"{name} frame must be an RGB uint8 array (H, W, 3), got {got}")
    if pred.shape != ref.shape:
        raise InputError(
            f"generated frame {pred.shape[:2]} and ground-truth frame {ref.shape[:2]} differ in size; "
            "resize one to the other before scoring"
        )
    return pred, ref


def psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of a generated frame against its ground-truth frame.

    ``10 log10(255^2 / MSE)`` with the MSE over all pixels and the three RGB channels (float64), the value
    ``skimage.metrics.peak_signal_noise_ratio(ref, pred, data_range=255)`` gives; ``inf`` for identical
    frames.

    Frames: RGB uint8 (H, W, 3), the same index of the two videos (no temporal alignment is searched), the
    same crop and resolution (no resizing here), values as decoded (sRGB, no Y-channel conversion).
    """
    pred, ref = _check_pair(pred, ref)
    mse = float(np.mean(np.square(pred.astype(np.float64) - ref.astype(np.float64))))
    return math.inf if mse == 0.0 else 10.0 * math.log10(DATA_RANGE**2 / mse)


def ssim(pred: np.ndarray, ref: np.ndarray) -> float:
    """Structural similarity of a generated frame and its ground-truth frame, in [-1, 1] (1: identical).

    ``skimage.metrics.structural_similarity`` with ``channel_axis=-1, data_range=255`` and
    :data:`SSIM_OPTIONS` (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5, population covariances,
    K1 0.01, K2 0.03); the SSIM map is averaged without its 5-pixel border, per RGB channel, then over the
    channels. Cost on this CPU: ~65 ms for a 412x454 frame, ~1.3 s for 1920x1080.

    Frames: RGB uint8 (H, W, 3), at least 11 x 11, the same index, crop and resolution (nothing is aligned or
    resized here), values as decoded (sRGB; no grey or Y-channel conversion).
    """
    pred, ref = _check_pair(pred, ref)
    if min(pred.shape[:2]) < SSIM_MIN_SIDE:
        raise InputError(
            f"SSIM needs frames of at least {SSIM_MIN_SIDE} x {SSIM_MIN_SIDE} pixels, got {pred.shape[:2]}"
        )
    return float(structural_similarity(pred, ref, channel_axis=-1, data_range=DATA_RANGE, **SSIM_OPTIONS))


class _Running:
    """Welford mean / population variance of a stream of floats in which ``inf`` may occur (PSNR of an
    identical pair): the summaries are what ``np.mean`` / ``np.std`` give on the whole list."""

    def __init__(self) -> None:
        self.count = 0
        self.infinite = 0
        self._finite = 0
        self._mean = 0.0
        self._m2 = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        if math.isinf(value):
            self.infinite += 1
            return
        self._finite += 1
        delta = value - self._mean
        self._mean += delta / self._finite
        self._m2 += delta * (value - self._mean)

    def mean(self) -> float:
        if self.count == 0:
            return math.nan
        return math.inf if self.infinite else self._mean

    def std(self) -> float:
        if self.count == 0 or self.infinite:  # inf - inf: numpy's std is nan too
            return math.nan
        return math.sqrt(self._m2 / self._finite)


class FrameScores:
    """PSNR and SSIM of a clip, accumulated one frame pair at a time (nothing but running sums is kept).

    ``add(pred, ref)`` scores one pair (see :func:`psnr` / :func:`ssim` for what a frame must be) and returns
    ``(psnr, ssim)``. Means and population standard deviations (ddof 0) are over the frames added, as
    ``np.mean`` / ``np.std`` of the per-frame values would be: one identical pair makes the mean PSNR ``inf``
    (so does a clip of identical frames) and its std ``nan``; ``identical_frames`` counts them. With no frame
    added every summary is ``nan``.
    """

    def __init__(self) -> None:
        self._psnr = _Running()
        self._ssim = _Running()

    def add(self, pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
        """Score one (generated, ground-truth) pair of RGB uint8 frames; returns ``(psnr_db, ssim)``."""
        scores = psnr(pred, ref), ssim(pred, ref)
        self._psnr.add(scores[0])
        self._ssim.add(scores[1])
        return scores

    @property
    def count(self) -> int:
        return self._psnr.count

    @property
    def identical_frames(self) -> int:
        return self._psnr.infinite

    @property
    def psnr_mean(self) -> float:
        return self._psnr.mean()

    @property
    def psnr_std(self) -> float:
        return self._psnr.std()

    @property
    def ssim_mean(self) -> float:
        return self._ssim.mean()

    @property
    def ssim_std(self) -> float:
        return self._ssim.std()

    def as_dict(self) -> dict[str, float]:
        """The summaries under flat names, for tables and loggers."""
        return {
            "frames": self.count,
            "identical_frames": self.identical_frames,
            "psnr_mean": self.psnr_mean,
            "psnr_std": self.psnr_std,
            "ssim_mean": self.ssim_mean,
            "ssim_std": self.ssim_std,
        }


# ---- Fréchet distance ----------------------------------------------------------------------------------


class FeatureStats:
    """Streaming mean and covariance of feature vectors: count, sum and sum of outer products in float64.

    The same accumulation as torchmetrics' ``FrechetInceptionDistance`` and StyleGAN's ``FeatureStats``; the
    covariance is the unbiased one, ``(sum x x^T - n mu mu^T) / (n - 1)``, as torchmetrics and pytorch-fid
    (``np.cov``) compute it (StyleGAN2/3 and StyleGAN-V divide by ``n``). Memory is O(D^2) whatever the count.
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    @property
    def dim(self) -> int | None:
        """Feature width D, fixed by the first :meth:`add` (None before)."""
        return None if self._sum is None else self._sum.shape[0]

    def add(self, features: np.ndarray) -> None:
        """Accumulate a batch of finite features (N, D); D must match the earlier batches."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] == 0:
            raise InputError(f"features must be a 2-D array (N, D), got shape {x.shape}")
        if self._sum is not None and x.shape[1] != self._sum.shape[0]:
            raise InputError(f"features have width {x.shape[1]}, earlier batches {self._sum.shape[0]}")
        if not np.isfinite(x).all():
            raise InputError("features contain NaN or inf; check the feature network and its input frames")
        if self._sum is None:
            self._sum = np.zeros(x.shape[1])
            self._outer = np.zeros((x.shape[1], x.shape[1]))
        self.count += x.shape[0]
        self._sum += x.sum(axis=0)
        self._outer += x.T @ x

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mu (D,), sigma (D, D))``, the unbiased covariance; needs at least 2 samples."""
        if self._sum is None or self._outer is None or self.count < 2:
            raise InputError(f"a mean and covariance need at least 2 feature vectors, got {self.count}")
        mean = self._sum / self.count
        cov = (self._outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        return mean, cov


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance of the Gaussians fitted to two feature sets (FID with Inception, FVD with I3D).

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b))`` in float64 with ``scipy.linalg.sqrtm``, as
    pytorch-fid's ``calculate_frechet_distance``: if the square root is not finite (a singular product), it is
    recomputed with ``1e-6 I`` added to both covariances; its imaginary part (numerical residue of a product
    that is not exactly symmetric positive semi-definite) is dropped, as StyleGAN3 / StyleGAN-V
    (``np.real``) and pytorch-fid do (pytorch-fid raises instead when a diagonal imaginary part exceeds 1e-3).
    torchmetrics computes ``Tr sqrtm`` as the sum of the square roots of the product's eigenvalues: the same
    value. With fewer samples than dimensions the covariances are singular, sqrtm warns about it (silenced
    here) and the distance is biased upwards; papers compare values from equal sample counts only.

    Symmetric in ``a`` and ``b``. InputError (one line) for fewer than 2 samples on a side or unequal widths.
    """
    for side, stats in (("first", a), ("second", b)):
        if stats.count < 2:
            raise InputError(
                f"Fréchet distance needs at least 2 feature vectors per side, the {side} has {stats.count}"
            )
    if a.dim != b.dim:
        raise InputError(f"Fréchet distance of features of different widths ({a.dim} and {b.dim})")
    mu_a, s_a = a.mean_cov()
    mu_b, s_b = b.mean_cov()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # "Matrix is singular": expected when N <= D
        covmean = linalg.sqrtm(s_a @ s_b)
        if not np.isfinite(covmean).all():
            offset = np.eye(s_a.shape[0]) * FRECHET_EPS
            covmean = linalg.sqrtm((s_a + offset) @ (s_b + offset))
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(np.real(covmean)))


# ---- feature networks from user files ------------------------------------------------------------------


def _load_torchscript(
    path: str | Path, device: torch.device | str, what: str, hint: str
) -> torch.jit.ScriptModule:
    """``torch.jit.load`` of a user file, in eval mode; InputError naming the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} not found: {hint}")
    try:
        with warnings.catch_warnings():
            # recent torch deprecates TorchScript; the reference networks exist only in that format.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # torch raises RuntimeError / ValueError / pickle errors for foreign files
        raise InputError(f"{what} {path} is {_describe_foreign(path)}: {hint}") from e
    return module.eval()


def _describe_foreign(path: Path) -> str:
    """What a file that ``torch.jit.load`` refused looks like, for the error message."""
    if zipfile.is_zipfile(path):  # torch.save's format since 1.6 (TorchScript is a zip too, but loads)
        return "a torch.save archive (e.g. a state dict), not TorchScript"
    with path.open("rb") as f:
        if f.read(1) == b"\x80":  # a pickle: torch.save's legacy format
            return "a pickled file (e.g. a legacy torch state dict), not TorchScript"
    return "not a TorchScript archive"


def _frames_to_uint8(frames: Sequence[np.ndarray], what: str) -> np.ndarray:
    """The frames stacked as (N, H, W, 3) uint8; InputError for an empty list, other dtypes or mixed sizes."""
    if len(frames) == 0:
        raise InputError(f"{what}: no frames given")
    first = frames[0]
    for frame in frames:
        if (
            not isinstance(frame, np.ndarray)
            or frame.dtype != np.uint8
            or frame.ndim != 3
            or frame.shape[2] != 3
        ):
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise InputError(f"{what}: frames must be RGB uint8 arrays (H, W, 3), got {got}")
        if frame.shape != first.shape:
            raise InputError(
                f"{what}: frames of one call must share a size, got {first.shape} and {frame.shape}"
            )
    return np.stack(frames)


def _probe(
    module: torch.jit.ScriptModule, x: torch.Tensor, kwargs: dict[str, bool], width: int
) -> torch.Tensor:
    """Run the network on ``x``; InputError unless it accepts ``kwargs`` and returns finite (N, width)."""
    try:
        with torch.inference_mode():
            out = module(x, **kwargs)
    except Exception as e:  # a foreign TorchScript: wrong signature or input layout
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot be called as {tuple(x.shape)} {x.dtype} with {kwargs} ({reason})") from e
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (x.shape[0], width):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"returns {got} for {x.shape[0]} input(s), expected ({x.shape[0]}, {width})")
    if not torch.isfinite(out).all():
        raise InputError("returns NaN or inf")
    return out


class InceptionFeatures:
    """FID features: NVIDIA's TorchScript translation of TF InceptionV3 ``inception-2015-12-05``.

    The file is ``inception-2015-12-05.pt`` from StyleGAN2-ADA's metrics (StyleGAN3 ships the same network
    pickled as ``inception-2015-12-05.pkl``; clean-fid loads the ``.pt`` with ``torch.jit.load``, as here).
    Its ``forward(img, return_features=False, use_fp16=False, no_output_bias=False)`` takes ``img``
    (N, 3, H, W) RGB in [0, 255] (StyleGAN passes uint8) of any size, resizes it to 299 x 299 inside
    (bilinear ``grid_sample``, border padding, ``align_corners=False``), maps it to ``(x - 128) / 128`` and,
    with ``return_features=True``, returns the (N, 2048) pool_3 features
    (without it: (N, 1008) softmax probabilities). StyleGAN's FID calls ``detector(images,
    return_features=True)``; so does this class. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` and
    torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` are the same TF weights as plain state
    dicts for their own modules, not TorchScript: they are refused with a message saying so.

    Frames: RGB (not BGR) uint8 (H, W, 3), any resolution, the whole frame as given (crop before: the same
    crop for generated and ground-truth videos); the frames of one call share a size.
    """

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        what = "FID Inception weights"
        hint = "give NVIDIA's TorchScript inception-2015-12-05.pt (StyleGAN2-ADA / StyleGAN3 metrics)"
        self.device = torch.device(device)
        self.module = _load_torchscript(path, self.device, what, hint)
        probe = torch.zeros((1, 3, 299, 299), dtype=torch.uint8, device=self.device)
        try:
            _probe(self.module, probe, {"return_features": True}, FID_FEATURES)
        except InputError as e:
            raise InputError(f"{what} {path} {e}: {hint}") from e

    def features(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 2048) float64 pool_3 features of N RGB uint8 frames (H, W, 3) of one size (see the class)."""
        batch = _frames_to_uint8(frames, "InceptionFeatures")
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(self.device)  # (N, 3, H, W) uint8
        with torch.inference_mode():
            out = self.module(x, return_features=True)
        return out.double().cpu().numpy()


def fvd_clips(frames: Iterable[np.ndarray], length: int = FVD_CLIP_FRAMES) -> Iterator[list[np.ndarray]]:
    """Non-overlapping windows of ``length`` consecutive frames of one video, from its first frame.

    Streaming: holds at most one window. The last incomplete window is dropped, so a video shorter than
    ``length`` gives no clip (StyleGAN-V discards short videos). Feed the generated and the ground-truth
    videos of a pair through it frame-aligned, at their native frame rate (25 fps for HDTF; nothing is
    resampled in time). StyleGAN-V takes one clip per video; all windows give more clips per video, which the
    Fréchet distance needs (a stable 400-d covariance wants hundreds of clips).
    """
    if length < 1:
        raise InputError(f"FVD clip length must be at least 1, got {length}")
    window: list[np.ndarray] = []
    for frame in frames:
        window.append(frame)
        if len(window) == length:
            yield window
            window = []


class I3DFeatures:
    """FVD features: the I3D (Kinetics-400) TorchScript ``i3d_torchscript.pt`` that StyleGAN-V distributes.

    It reproduces the tf.hub I3D of the original TF FVD (google-research ``frechet_video_distance``) up to the
    resizing. Its forward takes ``x`` (N, 3, T, H, W) RGB and the keywords ``rescale`` (maps [0, 255] to
    [-1, 1] inside), ``resize`` (to 224 x 224 inside) and ``return_features`` (the 400-d output before the
    softmax, "raw features before the softmax layer"; without it, softmax probabilities). StyleGAN-V's
    ``metrics/frechet_video_distance.py`` calls it with uint8 videos and ``rescale=True, resize=True,
    return_features=True``; so does this class. (Ports such as common_metrics_on_video_quality resize and
    rescale themselves and pass ``rescale=False, resize=False``.)

    Protocol here: clips of :data:`FVD_CLIP_FRAMES` (16) consecutive frames from :func:`fvd_clips`, each
    frame resized to 224 x 224 inside the network (no crop: the aspect ratio is not kept, so give square face
    crops or full frames of one size for both videos).

    Frames: RGB uint8 (H, W, 3) of one size, consecutive at the video's native frame rate.
    """

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        what = "FVD I3D weights"
        hint = "give StyleGAN-V's TorchScript i3d_torchscript.pt"
        self.device = torch.device(device)
        self.module = _load_torchscript(path, self.device, what, hint)
        probe = torch.zeros((1, 3, FVD_CLIP_FRAMES, 224, 224), dtype=torch.uint8, device=self.device)
        try:
            _probe(self.module, probe, self._kwargs(), FVD_FEATURES)
        except InputError as e:
            raise InputError(f"{what} {path} {e}: {hint}") from e

    @staticmethod
    def _kwargs() -> dict[str, bool]:
        return {"rescale": True, "resize": True, "return_features": True}

    def features(self, clip_frames: Sequence[np.ndarray]) -> np.ndarray:
        """(1, 400) float64 features of one clip of T consecutive RGB uint8 frames (H, W, 3) of one size."""
        clip = _frames_to_uint8(clip_frames, "I3DFeatures")
        x = (
            torch.from_numpy(clip).permute(3, 0, 1, 2).unsqueeze(0).contiguous().to(self.device)
        )  # (1, 3, T, H, W)
        with torch.inference_mode():
            out = self.module(x, **self._kwargs())
        return out.double().cpu().numpy()
