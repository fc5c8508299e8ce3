"""evaluate.run on real talking videos (a `video` column alone): self-reconstruction with model=tiny, the
quality metrics against each video filled in or n/a with the reason, FID / FVD over the set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ditto_research.evaluate.results import QUALITY_KEYS
from ditto_research.evaluate.run import evaluate_from_overrides
from tests.evaluate.test_identity import TinyEmbedder, _export
from tests.evaluate.test_score import PooledI3D, PooledInception, SquaredDifference, ffmpeg

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real_clips"
CLIPS = sorted(REAL.glob("*.mp4"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(len(CLIPS) < 2, reason="../shared/real_clips not present")]


def test_self_reconstruction_of_the_real_clips(tmp_path):
    weights = {"inception": tmp_path / "i.pt", "i3d": tmp_path / "v.pt", "lpips": tmp_path / "l.pt"}
    torch.jit.script(PooledInception()).save(str(weights["inception"]))
    torch.jit.script(PooledI3D()).save(str(weights["i3d"]))
    torch.jit.script(SquaredDifference()).save(str(weights["lpips"]))
    arcface = _export(TinyEmbedder(), tmp_path / "arcface.onnx")
    rows = []
    for i, clip in enumerate(CLIPS[:2]):
        short = tmp_path / f"real{i}.mp4"
        ffmpeg("-t", "2", "-i", str(clip), "-vf", "scale=-2:360", "-c:v", "libx264", str(short))
        rows.append(short.name)
    dataset = tmp_path / "real.csv"
    dataset.write_text("video\n" + "\n".join(rows) + "\n")
    record = evaluate_from_overrides(
        [
            "model=tiny",
            "face=mediapipe",
            "audio_encoder=untrained",
            "logger=none",
            f"dataset={dataset}",
            "max_seconds=1.2",
            "metrics=[quality,sync_proxy]",
            f"inception_weights={weights['inception']}",
            f"i3d_weights={weights['i3d']}",
            f"lpips_weights={weights['lpips']}",
            f"arcface_weights={arcface}",
        ],
        output_dir=tmp_path / "run",
    )
    assert record.status == "ok", record.error
    assert [c.status for c in record.clips] == ["ok", "ok"]
    for clip in record.clips:
        assert "quality" not in clip.notes, clip.notes  # scored, not failed
        assert clip.source.endswith("_source.png")  # the video's first frame is the source
        for key in ("psnr", "ssim", "lpips"):
            assert clip.metrics[key] is not None and clip.metrics[key] == clip.metrics[key], key
        for key in QUALITY_KEYS:  # filled, or n/a with the reason (tiny renders no face: no LMD / CSIM)
            assert clip.metrics.get(key) is not None or any(
                n.startswith(f"quality_{key[:3]}") for n in clip.notes
            )
    assert record.summary["fid"] > 0 and record.summary["fvd"] is not None
    assert (tmp_path / "run" / "clips.csv").read_text().splitlines()[0].count("psnr") == 1
