"""Quality against ground truth (evaluate.quality / evaluate.score) on a real talking clip and degraded
copies, with small stand-ins of each network's published interface (the real weights cannot be downloaded)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ditto_research.errors import DittoError, InputError
from ditto_research.evaluate.quality import QualityScorers, SetStats, score_pair
from ditto_research.media.ffmpeg import find_ffmpeg
from tests.evaluate.test_identity import TinyEmbedder, _export

REAL = (
    Path(__file__).resolve().parents[2].parent / "shared" / "real_clips" / "-1wCGAxqT_4+000000_000177+p0.mp4"
)
pytestmark = pytest.mark.skipif(not REAL.is_file(), reason="../shared/real_clips not present")


class PooledInception(nn.Module):
    """NVIDIA's Inception TorchScript signature; features: the image average-pooled to 8 x 8 per channel."""

    def forward(
        self,
        img: torch.Tensor,
        return_features: bool = False,
        use_fp16: bool = False,
        no_output_bias: bool = False,
    ) -> torch.Tensor:
        x = (img.to(torch.float32) - 128.0) / 128.0
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return torch.cat([pooled, torch.zeros(x.shape[0], 2048 - pooled.shape[1])], dim=1)


class PooledI3D(nn.Module):
    """StyleGAN-V's I3D TorchScript signature; features: the clip average-pooled to 2 x 4 x 4 per channel."""

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        y = x.to(torch.float32) / 127.5 - 1.0
        pooled = torch.nn.functional.adaptive_avg_pool3d(y, (2, 4, 4)).flatten(1)
        return torch.cat([pooled, torch.zeros(y.shape[0], 400 - pooled.shape[1])], dim=1)


class SquaredDifference(nn.Module):
    """lpips.LPIPS's call signature: mean squared difference of 4x average-pooled images."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        pa, pb = torch.nn.functional.avg_pool2d(a, 4), torch.nn.functional.avg_pool2d(b, 4)
        return ((pa - pb) ** 2).mean(dim=(1, 2, 3), keepdim=True)


def ffmpeg(*args: str) -> None:
    subprocess.run([find_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("score")
    m = {"ref": root / "ref.mp4"}
    ffmpeg("-t", "2", "-i", str(REAL), "-c:v", "libx264", "-crf", "12", str(m["ref"]))
    for strength in (1, 2, 3):  # noise and a shift to the left, both growing
        k = 4 * strength
        m[f"worse{strength}"] = root / f"worse{strength}.mp4"
        ffmpeg(
            "-i", str(m["ref"]),
            "-vf", f"noise=alls={6 * strength}:allf=t,crop=iw-{k}:ih:{k}:0,pad=iw+{k}:ih:0:0",
            "-c:v", "libx264", "-crf", "12", str(m[f"worse{strength}"]),
        )  # fmt: skip
    m["late"] = root / "late.mp4"  # one frame later: the same clip from frame 1
    ffmpeg("-ss", "0.04", "-i", str(m["ref"]), "-c:v", "libx264", "-crf", "12", str(m["late"]))
    m["half"] = root / "half.mp4"
    ffmpeg("-i", str(m["ref"]), "-vf", "scale=206:228", "-c:v", "libx264", str(m["half"]))
    m["square"] = root / "square.mp4"
    ffmpeg("-i", str(m["ref"]), "-vf", "crop=300:300", "-c:v", "libx264", str(m["square"]))
    m["long"] = root / "long.mp4"
    ffmpeg("-stream_loop", "1", "-i", str(m["ref"]), "-c:v", "libx264", str(m["long"]))
    m["silent_ref"] = root / "silent_ref.mp4"
    ffmpeg("-i", str(m["ref"]), "-an", "-c:v", "copy", str(m["silent_ref"]))
    m["silent_pred"] = root / "silent_pred.mp4"
    ffmpeg("-i", str(m["worse1"]), "-an", "-c:v", "copy", str(m["silent_pred"]))
    return m


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    from ditto_research.evaluate.metrics.syncnet import SyncNet

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    out = {
        "inception": root / "inception.pt",
        "i3d": root / "i3d.pt",
        "lpips": root / "lpips.pt",
        "arcface": _export(TinyEmbedder(), root / "arcface.onnx"),
        "syncnet": root / "syncnet.model",
    }
    torch.jit.script(PooledInception()).save(str(out["inception"]))
    torch.jit.script(PooledI3D()).save(str(out["i3d"]))
    torch.jit.script(SquaredDifference()).save(str(out["lpips"]))
    torch.save(SyncNet().state_dict(), out["syncnet"])
    return out


@pytest.fixture(scope="module")
def scorers(weights) -> QualityScorers:
    """Every network but SyncNet (a full-size random SyncNet costs seconds per clip on this CPU: it is scored
    once, in the self-comparison)."""
    return QualityScorers.from_files(**{k: str(v) for k, v in weights.items() if k != "syncnet"})


@pytest.fixture(scope="module")
def scored(media, weights, scorers):
    """Each degraded copy scored alone (a set of its own) against the reference, the reference itself (with
    SyncNet), and the one-frame-late copy against the reference's audio."""
    everything = QualityScorers.from_files(**{k: str(v) for k, v in weights.items()})
    out = {}
    for name in ("ref", "worse1", "worse2", "worse3", "late"):
        stats = SetStats()
        audio = media["ref"] if name == "late" else None  # late.mp4's own track moved with its frames
        result = score_pair(
            media[name], media["ref"], everything if name == "ref" else scorers, audio=audio, set_stats=stats
        )
        out[name] = (result, stats.fid()[0], stats.fvd()[0])
    return out


@pytest.mark.slow
def test_a_video_scored_against_itself_is_perfect(scored):
    result, fid, fvd = scored["ref"]
    m = result.metrics
    assert m["psnr"] == math.inf and m["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert m["lpips"] == 0.0 and m["lmd_mouth"] == 0.0 and m["lmd_face"] == 0.0
    assert abs(fid) < 1e-6 and abs(fvd) < 1e-6
    assert 0.9 < m["csim"] <= 1.0 + 1e-6  # every frame vs the first frame's identity
    assert all(m[k] is not None for k in ("lse_c", "lse_d", "av_offset", "proxy_corr"))
    assert result.frames == 50


@pytest.mark.slow
def test_stronger_degradation_scores_worse_on_every_metric(scored):
    rows = [scored[f"worse{s}"] for s in (1, 2, 3)]
    for key, better in (("psnr", 1), ("ssim", 1), ("lpips", -1), ("lmd_mouth", -1), ("lmd_face", -1)):
        values = [r[0].metrics[key] for r in rows]
        assert all(better * (a - b) > 0 for a, b in zip(values, values[1:])), (key, values)
    for position, name in ((1, "fid"), (2, "fvd")):
        values = [r[position] for r in rows]
        assert values[0] > scored["ref"][position] and values[0] < values[1] < values[2], (name, values)


@pytest.mark.slow
def test_a_one_frame_shift_is_seen_by_the_landmarks_and_the_sync_offset(scored):
    aligned, late = scored["ref"][0], scored["late"][0]
    assert late.metrics["lmd_mouth"] > 0.3 and aligned.metrics["lmd_mouth"] == 0.0
    assert abs(late.metrics["proxy_offset"] - aligned.metrics["proxy_offset"]) == 1
    assert "length" in late.notes  # 49 frames against 50: the overlap is scored, and said so


@pytest.mark.slow
def test_a_clip_scores_the_same_alone_and_inside_a_set(media, scorers, scored):
    stats = SetStats()
    score_pair(media["worse3"], media["ref"], scorers, set_stats=stats)
    inside = score_pair(media["worse1"], media["ref"], scorers, set_stats=stats)
    assert inside.metrics == scored["worse1"][0].metrics


def test_sizes_and_lengths_are_aligned_or_refused_as_stated(media, scorers):
    resized = score_pair(media["half"], media["ref"], scorers)
    assert "resized from 206x228 to the reference's 412x454" in resized.notes["size"]
    with pytest.raises(InputError, match="different aspect ratios"):
        score_pair(media["square"], media["ref"], scorers)
    with pytest.raises(InputError, match=r"lasts 4\.\d+ s and reference ref.mp4 2\.\d+ s"):
        score_pair(media["long"], media["ref"], scorers)


def test_without_any_audio_the_lip_sync_metrics_are_na_with_the_reason(media, scorers):
    result = score_pair(media["silent_pred"], media["silent_ref"], scorers)
    assert result.metrics["lse_c"] is None and result.metrics["proxy_corr"] is None
    assert result.notes["sync"].startswith("n/a: no audio")
    assert result.metrics["psnr"] > 20  # the rest is scored


def test_weights_of_the_wrong_kind_are_one_line(weights, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    for key, message in (
        ("inception", ""),
        ("lpips", "is not a TorchScript file"),
        ("arcface", "ArcFace ONNX"),
        ("syncnet", ""),
    ):
        with pytest.raises(DittoError) as raised:  # InputError, or CheckpointError for the SyncNet file
            QualityScorers.from_files(**{key: str(text)})
        assert message in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(InputError, match="LPIPS model"):
        QualityScorers.from_files(lpips=str(weights["inception"]))  # a network of another interface


@pytest.mark.slow
def test_the_command_scores_a_list_and_goes_on_past_missing_clips(media, weights, tmp_path):
    listing = tmp_path / "list.csv"
    rows = [("a", media["worse1"]), ("b", media["worse2"]), ("missing", tmp_path / "gone.mp4")]
    listing.write_text(
        "id,prediction,reference\n" + "".join(f"{i},{p},{media['ref']}\n" for i, p in rows), encoding="utf-8"
    )
    command = [
        sys.executable, "-m", "ditto_research.evaluate.score",
        f"dataset={listing}", f"output_dir={tmp_path / 'out'}", "logger=none", "progress=false",
        f"inception_weights={weights['inception']}", f"i3d_weights={weights['i3d']}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: 1 of 3 clips could not be scored" in result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["summary"]["clips_ok"] == 2 and results["summary"]["fid"] > 0
    assert results["summary"]["means"]["psnr"]["n"] == 2 and results["summary"]["means"]["psnr"]["ci95"] > 0
    csv_text = (tmp_path / "out" / "clips.csv").read_text()
    header = csv_text.splitlines()[0].split(",")
    for column in (
        "psnr",
        "ssim",
        "lpips",
        "lmd_mouth",
        "lmd_face",
        "csim",
        "lse_c",
        "lse_d",
        "av_offset",
        "notes",
    ):
        assert column in header
    assert "lpips: n/a: no lpips_weights" in csv_text and "gone.mp4 does not exist" in csv_text
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| Ditto (published) | 12.35 | 199.13 | 3.57 | 10.49 |" in report
    bad = tmp_path / "bad.csv"
    bad.write_text(f"prediction,reference\n{tmp_path / 'gone.mp4'},{media['ref']}\n")
    command[3:5] = [f"dataset={bad}", f"output_dir={tmp_path / 'out2'}"]  # the list's only clip is missing
    failed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert failed.returncode == 2 and failed.stderr.strip().splitlines()[-1].startswith("error: 1 of 1 clips")
