"""PSNR / SSIM, streaming Fréchet distance (vs torchmetrics), and the FID / FVD network wrappers (fake
TorchScript modules with the real call signatures)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from skimage.metrics import peak_signal_noise_ratio
from torch import nn

from ditto_research.errors import InputError
from ditto_research.evaluate.metrics import fidelity
from ditto_research.evaluate.metrics.fidelity import (
    FeatureStats,
    FrameScores,
    I3DFeatures,
    InceptionFeatures,
    frechet_distance,
    fvd_clips,
    psnr,
    ssim,
)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A 64 x 64 RGB uint8 crop of skimage's astronaut (a face with texture and flat areas)."""
    return np.ascontiguousarray(data.astronaut()[0:256:4, 128:384:4])


def noisy(frame: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, frame.shape)
    return np.clip(np.rint(frame + noise), 0, 255).astype(np.uint8)


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ---- PSNR / SSIM ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 3.0, 40.0])
def test_psnr_matches_skimage(face: np.ndarray, sigma: float) -> None:
    pred = noisy(face, sigma)
    ref_value = peak_signal_noise_ratio(face, pred, data_range=255)
    assert psnr(pred, face) == pytest.approx(ref_value, rel=1e-12)
    assert psnr(face, pred) == psnr(pred, face)


def test_identical_frames(face: np.ndarray) -> None:
    assert psnr(face, face.copy()) == math.inf
    assert ssim(face, face.copy()) == pytest.approx(1.0, abs=1e-12)


def test_stronger_noise_scores_strictly_worse(face: np.ndarray) -> None:
    frames = [noisy(face, sigma) for sigma in (2.0, 8.0, 32.0)]
    psnrs = [psnr(f, face) for f in frames]
    ssims = [ssim(f, face) for f in frames]
    assert psnrs[0] > psnrs[1] > psnrs[2]
    assert 1.0 > ssims[0] > ssims[1] > ssims[2]


def test_ssim_uses_the_gaussian_window(face: np.ndarray) -> None:
    # The Wang et al. settings give another value than skimage's default 7 x 7 uniform window.
    from skimage.metrics import structural_similarity

    pred = noisy(face, 8.0)
    default = structural_similarity(pred, face, channel_axis=-1, data_range=255)
    assert abs(ssim(pred, face) - default) > 1e-3


@pytest.mark.parametrize(
    ("pred", "ref", "needle"),
    [
        (np.zeros((16, 16, 3), np.uint8), np.zeros((16, 18, 3), np.uint8), "differ in size"),
        (np.zeros((16, 16, 3), np.float32), np.zeros((16, 16, 3), np.uint8), "RGB uint8"),
        (np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8), "RGB uint8"),
        (np.zeros((8, 8, 3), np.uint8), np.ones((8, 8, 3), np.uint8), "at least 11 x 11"),
    ],
)
def test_bad_frames(pred: np.ndarray, ref: np.ndarray, needle: str) -> None:
    with pytest.raises(InputError) as excinfo:
        FrameScores().add(pred, ref)
    assert needle in one_line(excinfo)


def test_frame_scores_stream_equals_numpy(face: np.ndarray) -> None:
    scores = FrameScores()
    pairs = [scores.add(noisy(face, sigma, seed), face) for seed, sigma in enumerate((1.0, 4.0, 9.0, 20.0))]
    psnrs, ssims = np.array(pairs).T
    assert scores.count == 4 and scores.identical_frames == 0
    np.testing.assert_allclose(
        [scores.psnr_mean, scores.psnr_std, scores.ssim_mean, scores.ssim_std],
        [psnrs.mean(), psnrs.std(), ssims.mean(), ssims.std()],
        rtol=1e-12,
    )


def test_frame_scores_with_identical_frames(face: np.ndarray) -> None:
    assert math.isnan(FrameScores().psnr_mean)
    scores = FrameScores()
    for _ in range(3):
        scores.add(face, face.copy())
    summary = scores.as_dict()
    assert summary["psnr_mean"] == math.inf and math.isnan(summary["psnr_std"])  # as np.mean / np.std
    assert summary["identical_frames"] == summary["frames"] == 3
    assert summary["ssim_mean"] == pytest.approx(1.0, abs=1e-12) and summary["ssim_std"] < 1e-12
    scores.add(noisy(face, 5.0), face)
    assert scores.psnr_mean == math.inf and scores.identical_frames == 3 and scores.count == 4


# ---- Fréchet distance ----------------------------------------------------------------------------------


def stats_of(*batches: np.ndarray) -> FeatureStats:
    stats = FeatureStats()
    for batch in batches:
        stats.add(batch)
    return stats


def test_streaming_stats_equal_batch_stats() -> None:
    x = np.random.default_rng(1).normal(0.5, 2.0, size=(101, 12))
    mean, cov = stats_of(*np.array_split(x, [1, 8, 40, 41])).mean_cov()
    assert np.abs(mean - x.mean(axis=0)).max() < 1e-14
    # Measured: max relative difference to np.cov about 5e-16.
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-14)


class _Features(nn.Module):
    """The identity, as a torchmetrics 'feature extractor': the 'images' are the features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def torchmetrics_fid(x: np.ndarray, y: np.ndarray) -> float:
    fid_module = pytest.importorskip("torchmetrics.image.fid")  # works without torch-fidelity
    metric = fid_module.FrechetInceptionDistance(feature=_Features(x.shape[1]))
    metric.update(torch.from_numpy(x), real=True)
    metric.update(torch.from_numpy(y), real=False)
    return float(metric.compute())


# Measured |ours - torchmetrics| over 5 seeds: <= 3e-13 with full-rank covariances (values ~40); <= 3e-7
# with 12 samples of width 24 (singular: square roots of eigenvalues ~1e-16 are ~1e-8; torchmetrics takes
# eigenvalues, we take scipy's sqrtm). The same for swapping the sides.
@pytest.mark.parametrize(("n", "dim", "tol"), [(300, 24, 1e-11), (12, 24, 2e-6)])
def test_frechet_matches_torchmetrics(n: int, dim: int, tol: float) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, dim))
    y = rng.normal(size=(n, dim)) @ rng.normal(0.0, 0.4, size=(dim, dim)) + 0.3
    ours = frechet_distance(stats_of(x[:5], x[5:]), stats_of(y))
    reference = torchmetrics_fid(x, y)
    assert abs(ours - reference) < tol
    assert abs(frechet_distance(stats_of(y), stats_of(x)) - ours) < tol


@pytest.mark.parametrize(("n", "tol"), [(200, 1e-11), (20, 2e-6)])
def test_frechet_of_same_features_is_zero(n: int, tol: float) -> None:
    # Measured over 5 seeds, width 32 (trace of a covariance ~32): |FD| <= 7e-14 with 200 samples; with 20
    # (singular covariances) about -3e-7.
    x = np.random.default_rng(2).normal(size=(n, 32))
    assert abs(frechet_distance(stats_of(x), stats_of(x[::-1]))) < tol


def test_frechet_retries_with_eps_when_sqrtm_is_not_finite(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    a, b = stats_of(rng.normal(size=(50, 6))), stats_of(rng.normal(size=(50, 6)) + 1.0)
    exact = frechet_distance(a, b)
    real_sqrtm = fidelity.linalg.sqrtm
    calls: list[np.ndarray] = []

    def first_call_fails(m: np.ndarray) -> np.ndarray:
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(fidelity.linalg, "sqrtm", first_call_fails)
    assert frechet_distance(a, b) == pytest.approx(exact, abs=1e-4)
    assert len(calls) == 2 and not np.array_equal(calls[0], calls[1])


def test_frechet_refuses_bad_stats() -> None:
    x = np.random.default_rng(4).normal(size=(5, 3))
    with pytest.raises(InputError) as excinfo:
        frechet_distance(stats_of(x), stats_of(x[:1]))
    assert "at least 2 feature vectors per side, the second has 1" in one_line(excinfo)
    with pytest.raises(InputError, match="different widths"):
        frechet_distance(stats_of(x), stats_of(x[:, :2]))
    with pytest.raises(InputError, match="width 2, earlier batches 3"):
        stats_of(x, x[:, :2])
    with pytest.raises(InputError, match="NaN or inf"):
        stats_of(np.full((2, 3), np.nan))


# ---- feature networks ----------------------------------------------------------------------------------


class FakeInception(nn.Module):
    """NVIDIA's Inception TorchScript signature; features[:3] = per-channel means of (img - 128) / 128."""

    def __init__(self, width: int = 2048) -> None:
        super().__init__()
        self.width = width

    def forward(
        self,
        img: torch.Tensor,
        return_features: bool = False,
        use_fp16: bool = False,
        no_output_bias: bool = False,
    ) -> torch.Tensor:
        if img.dtype != torch.uint8 or img.dim() != 4 or img.shape[1] != 3:
            raise ValueError("expects uint8 (N, 3, H, W)")
        x = (img.to(torch.float32) - 128.0) / 128.0
        features = torch.cat([x.mean(dim=(2, 3)), torch.zeros(x.shape[0], self.width - 3)], dim=1)
        return features if return_features else torch.softmax(features[:, :1008], dim=1)


class FakeI3D(nn.Module):
    """StyleGAN-V's I3D TorchScript signature; features: channel means, change of red from first to last
    frame."""

    def __init__(self, width: int = 400) -> None:
        super().__init__()
        self.width = width

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError("expects (N, 3, T, H, W)")
        y = x.to(torch.float32)
        if rescale:
            y = y / 255.0 * 2.0 - 1.0
        if resize:
            y = F.interpolate(y, size=[y.shape[2], 224, 224], mode="trilinear", align_corners=False)
        motion = (y[:, 0, -1] - y[:, 0, 0]).mean(dim=(1, 2)).unsqueeze(1)
        features = torch.cat([y.mean(dim=(2, 3, 4)), motion, torch.zeros(y.shape[0], self.width - 4)], dim=1)
        return features if return_features else torch.softmax(features, dim=1)


class PlainNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().flatten(1)[:, :4]


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fidelity_weights")
    files = {
        "inception": (FakeInception(), "inception.pt"),
        "inception_narrow": (FakeInception(width=10), "inception_narrow.pt"),
        "i3d": (FakeI3D(), "i3d.pt"),
        "i3d_wide": (FakeI3D(width=1024), "i3d_wide.pt"),
        "plain": (PlainNet(), "plain.pt"),
    }
    paths = {}
    for name, (module, filename) in files.items():
        paths[name] = folder / filename
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13: TorchScript is deprecated
            torch.jit.script(module).save(str(paths[name]))
    paths["state_dict"] = folder / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, paths["state_dict"])
    paths["legacy"] = folder / "legacy.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, paths["legacy"], _use_new_zipfile_serialization=False)
    paths["text"] = folder / "notes.txt"
    paths["text"].write_text("not weights\n")
    return paths


def test_inception_features(weight_files: dict[str, Path]) -> None:
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = 255
    grey = np.full((20, 30, 3), 128, np.uint8)
    out = InceptionFeatures(weight_files["inception"]).features([red, grey])
    assert out.shape == (2, 2048) and out.dtype == np.float64
    # RGB order, uint8 values in [0, 255] (the network normalises them itself).
    np.testing.assert_allclose(out[:, :3], [[127 / 128, -1.0, -1.0], [0.0, 0.0, 0.0]], atol=1e-6)


def test_i3d_features_and_clips(weight_files: dict[str, Path]) -> None:
    video = [np.zeros((32, 32, 3), np.uint8) for _ in range(35)]
    for t, frame in enumerate(video):
        frame[..., 0] = min(255, 16 * t)  # red ramps up in time
    clips = list(fvd_clips(iter(video)))
    assert [len(c) for c in clips] == [16, 16] and clips[1][0] is video[16]  # tail of 3 frames dropped
    assert list(fvd_clips(video[:15])) == []
    out = I3DFeatures(weight_files["i3d"]).features(clips[0])
    assert out.shape == (1, 400) and out.dtype == np.float64
    # (1, 3, T, H, W) with time on axis 2: red goes from 0 to 240 over the clip -> -1 to 240 / 255 * 2 - 1.
    assert out[0, 3] == pytest.approx(240 / 255 * 2, abs=1e-5)
    assert out[0, 1] == pytest.approx(-1.0) and out[0, 2] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("cls", "name", "needle"),
    [
        (InceptionFeatures, "missing", "not found"),
        (InceptionFeatures, "text", "not a TorchScript archive"),
        (InceptionFeatures, "state_dict", "a torch.save archive (e.g. a state dict), not TorchScript"),
        (InceptionFeatures, "legacy", "a pickled file (e.g. a legacy torch state dict), not TorchScript"),
        (InceptionFeatures, "inception_narrow", "returns (1, 10) for 1 input(s), expected (1, 2048)"),
        (InceptionFeatures, "plain", "cannot be called as (1, 3, 299, 299) torch.uint8"),
        (InceptionFeatures, "i3d", "cannot be called"),
        (I3DFeatures, "text", "not a TorchScript archive"),
        (I3DFeatures, "i3d_wide", "returns (1, 1024) for 1 input(s), expected (1, 400)"),
        (I3DFeatures, "inception", "cannot be called"),
    ],
)
def test_bad_weight_files(weight_files: dict[str, Path], cls: type, name: str, needle: str) -> None:
    path = weight_files.get(name, weight_files["text"].with_name("absent.pt"))
    with pytest.raises(InputError) as excinfo:
        cls(path)
    message = one_line(excinfo)
    assert needle in message and str(path) in message and "give" in message


def test_feature_frames_are_checked(weight_files: dict[str, Path]) -> None:
    net = InceptionFeatures(weight_files["inception"])
    with pytest.raises(InputError, match="no frames"):
        net.features([])
    with pytest.raises(InputError, match="share a size"):
        net.features([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)])
    with pytest.raises(InputError, match="RGB uint8"):
        net.features([np.zeros((8, 8, 3), np.float32)])
