"""Quality against ground truth: a generated (or any system's) video scored against the real one, frame by
frame, as talking-head papers report self-reconstruction (HDTF / VFHQ tables).

    scorers = QualityScorers.from_files(inception="inception-2015-12-05.pt", syncnet="syncnet_v2.model")
    result = score_pair("pred.mp4", "real.mp4", scorers, set_stats=stats)     # one clip
    stats.fid(), stats.fvd()                                                   # over the set

Both videos are read once, front to back, at 25 fps (:func:`~ditto_research.media.source.stream_video`), in
step; frame ``i`` of the prediction is compared with frame ``i`` of the reference. Per clip (each metric's
definition is in docs/evaluation.md and its module):

- ``psnr``: dB over RGB at the reference's resolution (the prediction resized to it, INTER_AREA), mean over
  frames (:mod:`~ditto_research.evaluate.metrics.fidelity`);
- ``ssim``: Wang et al. 2004 (Gaussian window, sigma 1.5) over RGB at the reference's resolution, mean;
- ``lpips``: a user-supplied TorchScript of ``lpips.LPIPS(net="alex")`` on both frames in [-1, 1] RGB at the
  reference's resolution, mean (n/a without ``lpips``);
- ``lmd_mouth`` / ``lmd_face``: landmark distance of the 40 lip points / the 127 face points (MediaPipe
  FaceMesh, the project's front-end) in units of a 256-px reference face box
  (:mod:`~ditto_research.evaluate.metrics.landmarks`);
- ``csim``: mean cosine similarity of ArcFace embeddings (user-supplied ONNX) of each generated frame and of
  the identity source (the ``source`` image, else the reference's first frame) (n/a without ``arcface``);
- ``lse_c`` / ``lse_d`` / ``av_offset``: SyncNet on the generated frames and the clip's audio, as the
  evaluation computes them (n/a without ``syncnet``); ``proxy_corr``: the weights-free sync proxy;

and over the set (:class:`SetStats`): FID (InceptionV3 pool features of every ``fid_stride``-th frame,
generated vs real) and FVD (I3D features of non-overlapping 16-frame windows).

Lengths: the first ``min(n_pred, n_ref)`` frames are scored when the two differ by at most 2 frames or 2 %
(encoders and frame-rate conversion drop or add a frame at the end); more is refused for the clip. Sizes: the
prediction is resized to the reference's size when their aspect ratios agree within 2 %; otherwise the clip is
refused (crop them alike first). Both are stated in the clip's notes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ditto_research.audio.io import load_audio
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.errors import DittoError, InputError
from ditto_research.evaluate.metrics.fidelity import (
    FeatureStats,
    FrameScores,
    I3DFeatures,
    InceptionFeatures,
    frechet_distance,
)
from ditto_research.evaluate.metrics.sync_proxy import mouth_opening
from ditto_research.media.source import load_source, stream_video

__all__ = ["CLIP_METRICS", "PairResult", "QualityScorers", "SetStats", "mean_with_interval", "score_pair"]

CLIP_METRICS = (
    "psnr",
    "ssim",
    "lpips",
    "lmd_mouth",
    "lmd_face",
    "csim",
    "lse_c",
    "lse_d",
    "av_offset",
    "proxy_corr",
    "proxy_offset",
)
LENGTH_SLACK_FRAMES = 2
LENGTH_SLACK_SHARE = 0.02
ASPECT_SLACK = 0.02
_FEATURE_BATCH = 16


class LpipsModel:
    """LPIPS from a user-supplied TorchScript of ``lpips.LPIPS(net="alex")`` (made where the ``lpips`` package
    is installed: ``torch.jit.trace(lpips.LPIPS(net="alex").eval(), (x, x)).save("lpips_alex.pt")`` with
    ``x = torch.zeros(1, 3, 64, 64)``): ``model(a, b)`` takes two (N, 3, H, W) float RGB images in [-1, 1] and
    returns the distance (N, 1, 1, 1)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.path = Path(path).expanduser()
        expected = "expected a TorchScript of lpips.LPIPS(net='alex'): model(a, b) -> (N, 1, 1, 1)"
        if not self.path.is_file():
            raise InputError(f"LPIPS model {self.path} does not exist; {expected}")
        try:
            self.model = torch.jit.load(str(self.path), map_location=device).eval()
        except Exception as e:  # noqa: BLE001 - torch raises several types for a file that is not TorchScript
            raise InputError(f"LPIPS model {self.path} is not a TorchScript file; {expected}") from e
        self.device = device
        probe = torch.zeros(1, 3, 32, 32, device=device)
        try:
            with torch.no_grad():
                out = self.model(probe, probe)
        except Exception as e:  # noqa: BLE001 - any failure of the user's graph on a valid input
            raise InputError(f"LPIPS model {self.path} fails on two 32x32 images; {expected}") from e
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise InputError(f"LPIPS model {self.path} returns {type(out).__name__}; {expected}")

    @torch.no_grad()
    def distance(self, pred: np.ndarray, ref: np.ndarray) -> float:
        """LPIPS of two (H, W, 3) uint8 RGB frames of one size."""

        def tensor(image: np.ndarray) -> torch.Tensor:
            image = np.ascontiguousarray(image)
            if not image.flags.writeable:  # decoded video frames can be read-only views; torch wants to own
                image = image.copy()
            t = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float()
            return t / 127.5 - 1.0

        return float(self.model(tensor(pred), tensor(ref)).reshape(-1)[0])


@dataclass
class QualityScorers:
    """The weight-backed scorers of a run (each None when its weights were not given: that metric is n/a)
    and how frames are handled."""

    inception: InceptionFeatures | None = None
    i3d: I3DFeatures | None = None
    lpips: LpipsModel | None = None
    arcface: Any = None  # IdentityEmbedder
    syncnet: Any = None  # SyncNet
    fid_stride: int = 1
    sync_max_offset: int = 15

    @classmethod
    def from_files(
        cls,
        *,
        inception: str | None = None,
        i3d: str | None = None,
        lpips: str | None = None,
        arcface: str | None = None,
        syncnet: str | None = None,
        **options: Any,
    ) -> QualityScorers:
        """Load each given weights file (InputError, one line, for a missing or wrong one)."""
        from ditto_research.evaluate.metrics.identity import IdentityEmbedder
        from ditto_research.evaluate.metrics.syncnet import load_syncnet

        return cls(
            InceptionFeatures(inception) if inception else None,
            I3DFeatures(i3d) if i3d else None,
            LpipsModel(lpips) if lpips else None,
            IdentityEmbedder(arcface) if arcface else None,
            load_syncnet(syncnet) if syncnet else None,
            **options,
        )

    def unavailable(self) -> dict[str, str]:
        """Metric -> why it is n/a for the whole run."""
        why = {}
        for name, key, setting in (
            ("fid", self.inception, "inception_weights (the FID InceptionV3 TorchScript)"),
            ("fvd", self.i3d, "i3d_weights (the FVD I3D TorchScript)"),
            ("lpips", self.lpips, "lpips_weights (a TorchScript of lpips.LPIPS(net='alex'))"),
            ("csim", self.arcface, "arcface_weights (an ArcFace ONNX)"),
            ("lse_c", self.syncnet, "syncnet_weights (syncnet_v2.model)"),
        ):
            if key is None:
                why[name] = f"n/a: no {setting}"
        if "lse_c" in why:
            why["lse_d"] = why["av_offset"] = why["lse_c"]
        return why


@dataclass
class SetStats:
    """Feature statistics over a whole set, generated vs real: FID and FVD."""

    fid_pred: FeatureStats = field(default_factory=FeatureStats)
    fid_ref: FeatureStats = field(default_factory=FeatureStats)
    fvd_pred: FeatureStats = field(default_factory=FeatureStats)
    fvd_ref: FeatureStats = field(default_factory=FeatureStats)

    @staticmethod
    def _distance(a: FeatureStats, b: FeatureStats, what: str) -> tuple[float | None, str | None]:
        if a.count < 2 or b.count < 2:
            return None, f"n/a: {what} needs at least 2 samples per side (got {a.count} and {b.count})"
        return frechet_distance(a, b), None

    def fid(self) -> tuple[float | None, str | None]:
        return self._distance(self.fid_pred, self.fid_ref, "FID")

    def fvd(self) -> tuple[float | None, str | None]:
        return self._distance(self.fvd_pred, self.fvd_ref, "FVD (16-frame windows)")


@dataclass
class PairResult:
    """One clip's scores (None where n/a), the reason for each n/a, frames scored."""

    metrics: dict[str, float | int | None]
    notes: dict[str, str]
    frames: int


def _resize_to(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if frame.shape[:2] == (height, width):
        return frame
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def _pairs(
    pred: Path, ref: Path, notes: dict[str, str], reference_may_be_longer: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frame pairs at 25 fps, the prediction at the reference's size; the length and size checks."""
    with stream_video(pred, max_size=0, fps=FPS) as p, stream_video(ref, max_size=0, fps=FPS) as r:
        if p.duration_s and r.duration_s:
            n_pred, n_ref = round(p.duration_s * FPS), round(r.duration_s * FPS)
            slack = max(LENGTH_SLACK_FRAMES, LENGTH_SLACK_SHARE * n_ref)
            if abs(n_pred - n_ref) > slack and not (reference_may_be_longer and n_pred < n_ref):
                raise InputError(
                    f"prediction {pred.name} lasts {p.duration_s:.2f} s and reference {ref.name} "
                    f"{r.duration_s:.2f} s; score videos of the same clip (or trim them alike)"
                )
        aspect_p, aspect_r = p.width / p.height, r.width / r.height
        if abs(aspect_p / aspect_r - 1) > ASPECT_SLACK:
            raise InputError(
                f"prediction {pred.name} is {p.width}x{p.height} and reference {ref.name} "
                f"{r.width}x{r.height}: different aspect ratios; crop them alike first"
            )
        if (p.width, p.height) != (r.width, r.height):
            notes["size"] = (
                f"prediction resized from {p.width}x{p.height} to the reference's {r.width}x{r.height}"
            )
        size = (r.height, r.width)
        pred_frames, ref_frames = p.frames(), r.frames()
        count = 0
        for a, b in zip(pred_frames, ref_frames):
            count += 1
            yield _resize_to(a, size), b
        rest_p = sum(1 for _ in pred_frames)
        rest_r = sum(1 for _ in ref_frames) if not reference_may_be_longer else 0
        if rest_p or rest_r:
            notes["length"] = (
                f"scored the first {count} frames (prediction {count + rest_p}, reference {count + rest_r})"
            )


def _batched(frames: list[np.ndarray], extract: Any, stats: FeatureStats) -> None:
    if frames:
        stats.add(extract(frames))
        frames.clear()


def score_pair(
    prediction: str | Path,
    reference: str | Path,
    scorers: QualityScorers,
    *,
    source: str | Path | None = None,
    audio: str | Path | None = None,
    set_stats: SetStats | None = None,
    lip_sync: bool = True,
    reference_may_be_longer: bool = False,
) -> PairResult:
    """Score ``prediction`` against ``reference`` (see the module docstring); FID / FVD features go into
    ``set_stats``. ``source``: the identity image for CSIM (default: the reference's first frame); ``audio``:
    the speech for the lip-sync metrics (default: the prediction's own track, else the reference's);
    ``lip_sync=False`` leaves those out (a caller that measures them itself); ``reference_may_be_longer``:
    score a prediction of the reference's first seconds (an evaluation with ``max_seconds``).

    Raises:
        InputError: a file that is missing or not a video, lengths or aspect ratios that do not match.
    """
    from ditto_research.evaluate.metrics.landmarks import LandmarkDistance, mediapipe_frontend

    pred, ref = Path(prediction).expanduser(), Path(reference).expanduser()
    notes: dict[str, str] = {}
    frames = FrameScores()
    lpips_sum, lpips_n = 0.0, 0
    fid_pred: list[np.ndarray] = []
    fid_ref: list[np.ndarray] = []
    window_pred: list[np.ndarray] = []
    window_ref: list[np.ndarray] = []
    opening: list[float] = []
    boxes: list[np.ndarray] = []
    ref_size: tuple[int, int] = (0, 0)
    identity = None
    cos_sum, cos_n, no_face = 0.0, 0, 0
    frontend, owned = mediapipe_frontend(None, "score_pair")
    lmd = LandmarkDistance(frontend)
    try:
        if scorers.arcface is not None:
            identity = _identity_embedding(scorers.arcface, source, ref, frontend)
        for index, (p, r) in enumerate(_pairs(pred, ref, notes, reference_may_be_longer)):
            ref_size = r.shape[:2]
            frames.add(p, r)
            if scorers.lpips is not None:
                lpips_sum += scorers.lpips.distance(p, r)
                lpips_n += 1
            lmd.add(p, r)
            if identity is not None:
                face = lmd.last_pred  # the face LMD tracked in this generated frame
                if face is None:
                    no_face += 1
                else:
                    e = scorers.arcface.embed_face(p, face).astype(np.float64)
                    cos_sum += float(e @ identity / (np.linalg.norm(e) * np.linalg.norm(identity) + 1e-12))
                    cos_n += 1
            if set_stats is not None and scorers.inception is not None and index % scorers.fid_stride == 0:
                fid_pred.append(p)
                fid_ref.append(r)
                if len(fid_pred) == _FEATURE_BATCH:
                    _batched(fid_pred, scorers.inception.features, set_stats.fid_pred)
                    _batched(fid_ref, scorers.inception.features, set_stats.fid_ref)
            if set_stats is not None and scorers.i3d is not None:
                window_pred.append(p)
                window_ref.append(r)
                if len(window_pred) == 16:
                    set_stats.fvd_pred.add(scorers.i3d.features(window_pred))
                    set_stats.fvd_ref.add(scorers.i3d.features(window_ref))
                    window_pred.clear()
                    window_ref.clear()
            if lip_sync:  # per frame only the mouth opening and the face box: nothing grows with frames
                face = lmd.last_pred
                opening.append(mouth_opening(face) if face is not None else math.nan)
                boxes.append(face.box.astype(np.float64) if face is not None else np.full(4, np.nan))
        if set_stats is not None and scorers.inception is not None:
            _batched(fid_pred, scorers.inception.features, set_stats.fid_pred)
            _batched(fid_ref, scorers.inception.features, set_stats.fid_ref)
    finally:
        if owned:
            frontend.close()
    if frames.count == 0:
        raise InputError(f"prediction {pred.name} or reference {ref.name} has no frames")
    metrics: dict[str, float | int | None] = {"psnr": frames.psnr_mean, "ssim": frames.ssim_mean}
    metrics["lpips"] = lpips_sum / lpips_n if lpips_n else None
    metrics["lmd_mouth"] = lmd.mean_mouth if lmd.frames else None
    metrics["lmd_face"] = lmd.mean_face if lmd.frames else None
    if lmd.frames_without_face:
        notes["lmd"] = (
            f"{lmd.frames_without_face} of {frames.count} frame pairs without a face on a side: skipped"
        )
    if not lmd.frames:
        notes["lmd"] = "n/a: no frame pair shows a face on both sides"
    metrics["csim"] = cos_sum / cos_n if cos_n else None
    if identity is not None and not cos_n:
        notes["csim"] = "n/a: no generated frame shows a face"
    elif no_face:
        notes["csim"] = f"{no_face} generated frames without a face: skipped"
    if lip_sync:
        sync = _lip_sync(np.asarray(opening), np.asarray(boxes), audio, pred, ref, scorers, notes, ref_size)
        metrics |= sync
    for name, why in scorers.unavailable().items():
        if name in metrics and metrics[name] is None:
            notes.setdefault(name, why)
    return PairResult(metrics, notes, frames.count)


def _identity_embedding(embedder: Any, source: str | Path | None, ref: Path, frontend: Any) -> np.ndarray:
    from ditto_research.evaluate.metrics.landmarks import FaceTrack

    if source is not None:
        media = load_source(source, max_size=0)
        image = media.frame(0, mirror=False)
        media.close()
        what = f"identity source {Path(source).name}"
    else:
        with stream_video(ref, max_size=0, fps=FPS) as r:
            image = next(r.frames(), None)
        what = f"the first frame of {ref.name}"
    face = FaceTrack(frontend).locate(image, what) if image is not None else None
    if face is None:
        raise InputError(f"no face in {what}: CSIM needs the identity's face")
    return embedder.embed_face(np.asarray(image), face).astype(np.float64)


def _lip_sync(
    opening: np.ndarray,
    boxes: np.ndarray,
    audio: str | Path | None,
    pred: Path,
    ref: Path,
    scorers: QualityScorers,
    notes: dict[str, str],
    size: tuple[int, int],
) -> dict[str, float | int | None]:
    """The sync proxy from the per-frame mouth opening, and SyncNet on crops cut along the tracked face boxes
    (found on frames of ``size``, the reference's) in a second decode pass of the prediction (the crops,
    150 kB a frame, are what SyncNet holds)."""
    from ditto_research.evaluate.metrics.sync_proxy import sync_proxy_score
    from ditto_research.evaluate.metrics.syncnet import crops_along_track, lse_scores

    out: dict[str, float | int | None] = dict.fromkeys(
        ("lse_c", "lse_d", "av_offset", "proxy_corr", "proxy_offset")
    )
    samples = None
    for candidate in [audio] if audio else [pred, ref]:
        try:
            samples = load_audio(candidate, SAMPLE_RATE)
            break
        except InputError:
            continue
    if samples is None:
        notes["sync"] = "n/a: no audio (neither the prediction nor the reference has a track)"
        return out
    if np.isfinite(opening).any():
        proxy = sync_proxy_score(opening, samples, SAMPLE_RATE, FPS, max_offset=scorers.sync_max_offset)
        if proxy.offset is not None:
            out |= {"proxy_corr": proxy.peak_corr, "proxy_offset": proxy.offset}
    if scorers.syncnet is not None:
        try:
            with stream_video(pred, max_size=0, fps=FPS) as video:
                crops = crops_along_track((_resize_to(f, size) for f in video.frames()), boxes)
            sync = lse_scores(crops, samples, scorers.syncnet, vshift=scorers.sync_max_offset)
            out |= {"lse_c": sync.lse_c, "lse_d": sync.lse_d, "av_offset": sync.av_offset}
        except DittoError as e:
            notes["lse_c"] = f"n/a: {e}"
    return out


def mean_with_interval(values: list[float]) -> dict[str, float | int | None]:
    """Mean, standard deviation and the 95 % confidence interval of the mean (Student's t) of the finite
    ``values``; ``n`` how many."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(finite.size)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = float(finite.mean())
    if n == 1:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    from scipy import stats

    std = float(finite.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))
    return {"mean": mean, "std": std, "ci95": half, "n": n}
