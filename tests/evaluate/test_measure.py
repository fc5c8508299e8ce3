"""Per-clip scoring on frames that show a face, and mode=online through the evaluate app."""

from __future__ import annotations

import math

import numpy as np
from skimage import data

from ditto_research.config import compose, to_config
from ditto_research.evaluate.config import EvaluateConfig
from ditto_research.evaluate.generate import Generation
from ditto_research.evaluate.measure import ClipContext, clip_metrics, describe_error
from ditto_research.evaluate.run import evaluate_from_overrides
from ditto_research.examples import synthetic_speech
from ditto_research.pipeline.clip import ClipReport
from tests.evaluate.conftest import TINY, write_csv


def _generation(frames: list[np.ndarray], seconds: float) -> Generation:
    report = ClipReport(
        output=None,
        frames=len(frames),
        audio_s=seconds,
        seconds=1.0,
        register_s=0.1,
        render_s=0.9,
        emit_s=[0.1] * len(frames),
    )
    return Generation(report, audio=synthetic_speech(seconds), frames=frames, samples={}, motion=None)


def test_syncnet_and_proxy_on_frames_with_a_face(tmp_path):
    """A still portrait: SyncNet and proxy scores exist (random weights / landmark jitter: values only, no
    meaning); the motion statistics say the renderer exposed no motion."""
    import torch

    from ditto_research.evaluate.metrics.syncnet import SyncNet

    torch.manual_seed(0)
    cfg = EvaluateConfig(metrics=["motion", "sync_proxy", "syncnet"])
    gen = _generation([data.astronaut()] * 12, 12 / 25)
    metrics, notes = clip_metrics(gen, ClipContext(cfg, tmp_path, SyncNet().eval()))
    assert math.isfinite(metrics["lse_d"]) and metrics["lse_c"] >= 0 and -15 <= metrics["av_offset"] <= 15
    assert -1 <= metrics["proxy_corr"] <= 1 and abs(metrics["proxy_offset"]) <= 15
    assert set(notes) == {"motion"} and "did not expose the generated motion" in notes["motion"]


def test_describe_error_keeps_user_messages_and_names_other_types():
    from ditto_research.errors import InputError

    assert describe_error(InputError("no face found in x.png")) == "no face found in x.png"
    assert describe_error(ValueError("bad\nsecond line")) == "ValueError: bad"


def test_online_mode_records_frame_latency_and_per_call_stage_times(eval_media, tmp_path):
    dataset = write_csv(tmp_path / "set.csv", [(str(eval_media["face"]), str(eval_media["speech"]))])
    record = evaluate_from_overrides(
        [*TINY, f"dataset={dataset}", "mode=online", "max_seconds=0.3", "metrics=[motion]"],
        output_dir=tmp_path / "run",
    )
    assert record.status == "ok", record.error
    clip = record.clips[0]
    assert clip.status == "ok" and clip.frames == math.ceil(0.3 * 25)
    assert len(clip.frame_latency_ms) == clip.frames and all(v >= 0 for v in clip.frame_latency_ms)
    assert clip.first_frame_ms == clip.frame_latency_ms[0]
    assert record.summary["latency_p95_ms"] >= record.summary["latency_p50_ms"] > 0
    assert {"warp", "decode"} <= {s.stage for s in clip.stages} and clip.metrics["lip_energy"] > 0
    warp = next(s for s in clip.stages if s.stage == "warp")
    assert warp.calls == clip.frames and warp.p95_ms >= warp.p50_ms > 0  # per-call percentiles, as offline


def test_lightning_executor_single_cpu_process(eval_media, tmp_path):
    dataset = write_csv(
        tmp_path / "set.csv",
        [
            (str(eval_media["face"]), str(eval_media["speech"])),
            (str(eval_media["wall"]), str(eval_media["speech"])),
        ],
    )
    record = evaluate_from_overrides(
        [
            *TINY,
            f"dataset={dataset}",
            "executor=lightning",
            "lightning.accelerator=cpu",
            "lightning.devices=1",
            "max_seconds=0.2",
            "metrics=[motion]",
        ],
        output_dir=tmp_path / "run",
    )
    assert [c.status for c in record.clips] == ["ok", "failed"]  # dataset order, the failure recorded
    assert record.clips[0].frames == math.ceil(0.2 * 25) and record.summary["load_s"] > 0
    assert (tmp_path / "run" / "lightning" / "rank_0.json").is_file()


def test_the_online_clip_decodes_its_audio_once(eval_media, monkeypatch):
    """The evaluation renders through the one run path and hands it the samples it decoded."""
    import ditto_research.evaluate.generate as generate_module
    import ditto_research.pipeline.clip as clip_module
    from ditto_research.evaluate.dataset import Clip
    from ditto_research.evaluate.generate import make_renderer

    decoded = []
    real = generate_module.load_audio

    def counting(path, *args):
        decoded.append(path)
        return real(path, *args)

    monkeypatch.setattr(generate_module, "load_audio", counting)
    monkeypatch.setattr(clip_module, "load_audio", counting)
    renderer = make_renderer(to_config(compose("infer", [*TINY, "mode=online", "progress=false"])))
    try:
        clip = Clip("c", eval_media["face"], eval_media["speech"])
        gen = renderer.render(clip, None, sample_count=2, metrics_max_size=128)
    finally:
        renderer.close()
    assert decoded == [eval_media["speech"]]
    assert gen.report.mode == "online" and gen.report.frames == len(gen.frames) == 15
    assert len(gen.samples) == 2 and max(gen.frames[0].shape[:2]) <= 128 and gen.motion.shape == (15, 265)
