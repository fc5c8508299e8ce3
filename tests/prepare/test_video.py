"""prepare_video on a real talking video (``../shared/real_clips``) with ``model=tiny``: one decode pass,
frame counts from the duration, real eye features, the mirrored copy, bad inputs stopped before any work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from ditto_research.audio.io import load_audio, num_video_frames, write_wav
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.data import DatasetWriter, PreparedDataset, TrainingWindows
from ditto_research.errors import InputError
from ditto_research.examples import synthetic_speech
from ditto_research.media.ffmpeg import find_ffmpeg
from ditto_research.pipeline.engine import Engine
from ditto_research.prepare import MIN_FRAMES, VideoStats, prepare_video

REAL_CLIPS = Path(__file__).resolve().parents[2].parent / "shared" / "real_clips"
CLOSE_UP = REAL_CLIPS / "-1wCGAxqT_4+000000_000177+p0.mp4"  # 412x454, 7.17 s, a leading '-' in its name


@pytest.fixture(scope="module")
def engine():
    e = Engine.from_overrides(["model=tiny", "face=mediapipe", "audio_encoder=untrained", "progress=false"])
    yield e
    e.close()


@pytest.fixture(scope="module")
def prepared(engine, monkeypatch_module):
    if not CLOSE_UP.is_file():
        pytest.skip(f"real clip {CLOSE_UP} not present")
    import ditto_research.media.source as source

    opened = []
    real = source._Decoder

    def counting(*args, **kwargs):
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch_module.setattr(source, "_Decoder", counting)
    stats = VideoStats()
    clips = prepare_video(engine, CLOSE_UP, "closeup", flip=True, emotion="happy", stats=stats)
    return clips, opened, stats


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_a_real_clip_is_decoded_once_and_counted_from_its_duration(prepared):
    clips, opened, stats = prepared
    assert len(opened) == 1  # one decode pass for the original and the mirrored copy
    assert stats.decoders == 2  # that video decoder and one audio decoder, each reading the file once
    original, flipped = clips
    audio_frames = num_video_frames(len(load_audio(CLOSE_UP, SAMPLE_RATE)), SAMPLE_RATE, FPS)
    assert stats.frames == 178  # the file's name says frames 000000-000177 (25 fps)
    assert original.frames == min(178, audio_frames) and audio_frames == 180  # 7.17 s of audio
    assert original.frames == flipped.frames and original.meta["segment"] == [0, 178]
    assert original.meta["ended_by"] == "the end of the video"
    assert original.clip_id == "closeup_f000000" and flipped.clip_id == "closeup_f000000_flip"
    assert not original.meta["flipped"] and flipped.meta["flipped"]
    assert original.meta["emotion_source"] == "label happy"
    assert original["emotion"].argmax(axis=1).tolist() == [3] * original.frames  # happy, every frame


def test_eye_features_come_from_real_landmarks(prepared):
    original, _ = prepared[0]
    assert original["eye_open"].std(axis=0).min() > 1e-3  # the eyes move over the clip
    assert np.isfinite(original["motion"]).all() and original["motion"].std(axis=0).max() > 0


def test_the_mirrored_copy_mirrors_the_eye_balls(prepared):
    """Mirroring swaps the eyes and turns the horizontal iris offset around: the mirrored clip's x row is the
    original's with the eyes swapped and the sign flipped, up to the landmarker's own noise on a mirrored
    image (measured correlations on this clip: x 0.976, y 0.829, eye openness 0.920)."""
    original, flipped = prepared[0]
    x, x_mirrored = original["eye_ball"][:, 0, :], flipped["eye_ball"][:, 0, :]
    assert np.corrcoef(-x[:, ::-1].ravel(), x_mirrored.ravel())[0, 1] > 0.9
    y, y_mirrored = original["eye_ball"][:, 1, :], flipped["eye_ball"][:, 1, :]
    assert np.corrcoef(y[:, ::-1].ravel(), y_mirrored.ravel())[0, 1] > 0.7
    opened, opened_mirrored = original["eye_open"], flipped["eye_open"]
    assert np.corrcoef(opened[:, ::-1].ravel(), opened_mirrored.ravel())[0, 1] > 0.85
    np.testing.assert_array_equal(original["audio_features"], flipped["audio_features"])


def test_prepared_clips_feed_training_windows(prepared, tmp_path):
    writer = DatasetWriter(tmp_path / "ds", {"model": "tiny"})
    for clip in prepared[0]:
        writer.add(clip)
    dataset = PreparedDataset(tmp_path / "ds")
    windows = TrainingWindows(dataset)
    assert len(windows) == sum(clip.frames - 80 for clip in prepared[0])
    item = windows[0]
    assert item["kp_seq"].shape == (80, 265) and item["aud_cond"].shape == (80, 1103)


def _ffmpeg(*args: str) -> None:
    subprocess.run([find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def test_bad_videos_stop_before_any_frame_is_registered(engine, tmp_path, monkeypatch):
    import ditto_research.prepare.video as video_module

    monkeypatch.setattr(video_module, "crop_frame", lambda *a, **k: pytest.fail("registered a frame"))
    silent = tmp_path / "silent.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=4", str(silent))
    with pytest.raises(InputError, match="silent.mp4"):
        prepare_video(engine, silent, "silent")
    short = tmp_path / "short.mp4"
    speech = write_wav(tmp_path / "speech.wav", synthetic_speech(2.0))
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x64:rate=25:duration=2",
        "-i",
        str(speech),
        "-shortest",
        str(short),
    )
    with pytest.raises(InputError, match=rf"short.mp4 holds \d+ frames .* needs at least {MIN_FRAMES}"):
        prepare_video(engine, short, "short")
    with pytest.raises(InputError, match="has no video stream"):
        prepare_video(engine, write_wav(tmp_path / "long.wav", synthetic_speech(4.0)), "audio_only")


def test_batched_motion_extraction_matches_one_frame_at_a_time(engine):
    """prepare.batch_size=8 runs the motion extractor on 8 crops per call; the rows equal the per-frame path
    up to float32 rounding of the batched kernels (measured here, tiny: 6.7e-7 of the largest value)."""
    from ditto_research.prepare import PrepareSettings, prepare_segments

    def motion(batch: int) -> np.ndarray:
        settings = PrepareSettings(batch_size=batch)
        items = prepare_segments(engine, CLOSE_UP, "c", settings=settings, start_s=0.0, end_s=3.6)
        (segment,) = [item for item in items if hasattr(item, "clips")]
        return segment.clips[0]["motion"]

    one, eight = motion(1), motion(8)
    assert one.shape == eight.shape == (90, 265)
    scale = np.abs(one).max()
    assert np.abs(one - eight).max() / scale < 1e-5
