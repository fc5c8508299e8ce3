"""pipeline.clip.run_clip: the one run path of every clip (CLI both modes, the sessions, evaluation,
benchmarks) and the one definition of its numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ditto_research.audio.io import num_video_frames, write_wav
from ditto_research.errors import InputError
from ditto_research.examples import example_source, synthetic_speech
from ditto_research.pipeline.clip import ClipReport, run_clip
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.observers import MotionRecorder
from ditto_research.pipeline.online import StreamingSession

BASE = ["model=tiny", "progress=false", "sampler.steps=2", "face=mediapipe", "audio_encoder=untrained"]


@pytest.fixture(scope="module")
def engine():
    e = Engine.from_overrides(BASE)
    yield e
    e.close()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("clip") / "speech.wav", synthetic_speech(0.6, seed=3))


def check_numbers(report: ClipReport, frames: int) -> None:
    """The definitions of the module docstring, whichever mode ran."""
    assert report.frames == frames == len(report.emit_s)
    assert report.audio_s == pytest.approx(0.6)
    assert 0 < report.register_s and 0 < report.render_s
    assert report.register_s + report.render_s <= report.seconds
    assert report.fps == pytest.approx(frames / report.seconds)
    assert report.render_fps == pytest.approx(frames / report.render_s)
    assert report.real_time_factor == pytest.approx(report.seconds / 0.6)
    assert report.emit_s == sorted(report.emit_s) and report.emit_s[-1] <= report.render_s
    assert report.load_s > 0 and report.peak_rss_mb > 0
    assert set(report.stage_calls_s) == set(report.stage_ms_per_frame)
    for name, calls in report.stage_calls_s.items():
        assert report.stage_ms_per_frame[name] == pytest.approx(1000 * sum(calls) / frames)


def test_offline_and_online_report_the_same_numbers_the_same_way(engine, speech, tmp_path):
    frames = num_video_frames(int(0.6 * 16000))
    offline_seen, online_seen = [], []
    offline = run_clip(
        engine,
        example_source(),
        speech,
        tmp_path / "off.mp4",
        on_frame=lambda f: offline_seen.append(f.index),
    )
    online = run_clip(
        engine,
        example_source(),
        speech,
        tmp_path / "on.mp4",
        stream=StreamingSession(engine),
        on_frame=lambda f: online_seen.append(f.index),
    )
    for report, seen in ((offline, offline_seen), (online, online_seen)):
        check_numbers(report, frames)
        assert seen == list(range(frames)) and report.output is not None and report.output.is_file()
    assert offline.mode == "offline" and offline.latency is None and offline.latency_s == []
    assert offline.first_frame_s == offline.emit_s[0]
    assert online.mode == "online" and not online.realtime and len(online.latency_s) == frames
    assert online.first_frame_s == online.latency_s[0] and online.latency.frames == frames
    assert "fps, RTF" in offline.summary() and "registration" in online.summary()
    assert "latency is measured with mode.realtime=true" in online.summary()


def test_the_sessions_and_the_cli_return_the_run_paths_report(engine, speech):
    from ditto_research.pipeline import RunResult, StreamResult
    from ditto_research.pipeline.session import TalkingHeadSession

    assert RunResult is ClipReport and StreamResult is ClipReport  # the former names still import
    assert isinstance(TalkingHeadSession(engine).generate(example_source(), speech, None), ClipReport)
    assert StreamingSession(engine).run_file(example_source(), speech, None).mode == "online"


def test_without_audio_the_real_time_factor_is_undefined():
    report = ClipReport(output=None, frames=0, audio_s=0.0, seconds=1.0, register_s=0.5, render_s=0.5)
    assert math.isnan(report.real_time_factor) and report.fps == 0.0 and report.first_frame_s is None


def test_decoded_samples_are_not_decoded_again(engine, speech, monkeypatch):
    import ditto_research.pipeline.clip as clip_module

    def no_second_decode(*args, **kwargs):
        raise AssertionError("run_clip decoded audio it was given")

    monkeypatch.setattr(clip_module, "load_audio", no_second_decode)
    samples = synthetic_speech(0.6, seed=3)
    motion = MotionRecorder(15)
    report = run_clip(engine, example_source(), speech, None, samples=samples, observers=[motion])
    assert report.frames == 15 and motion.array().shape == (15, 265)


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_both_modes_check_precomputed_features_before_any_work(tmp_path, speech, mode):
    """A features file shorter than the audio is one clear line before registration, in both modes (the
    evaluation's offline branch used to skip this check)."""
    np.save(tmp_path / "f.npy", np.zeros((10, 1024), np.float32))
    engine = Engine.from_overrides(
        [*BASE, "audio_encoder=precomputed", f"audio_encoder.path={tmp_path / 'f.npy'}"]
    )
    registered = []
    engine.register = lambda *a, **k: registered.append(a)  # must not be reached
    stream = StreamingSession(engine) if mode == "online" else None
    try:
        with pytest.raises(InputError, match="has 10 feature rows but .*speech.wav needs 15"):
            run_clip(engine, example_source(), speech, None, stream=stream)
    finally:
        engine.close()
    assert registered == []
