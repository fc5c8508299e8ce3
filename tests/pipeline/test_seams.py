"""Injection seams that are also features: precomputed speech features, given landmarks, replayable random
streams, observers at every boundary (``model=tiny``; the golden run: tests/pipeline/test_e2e_golden.py)."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from ditto_research.audio.features import online_features
from ditto_research.audio.io import num_video_frames, write_wav
from ditto_research.diffusion.noise import NumpyNoise, make_noise
from ditto_research.errors import ConfigError, InputError
from ditto_research.examples import example_source, synthetic_speech
from ditto_research.motion.stitch import UNKNOWN_LENGTH_FRAMES, blink_schedule
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.observers import PipelineObserver
from ditto_research.pipeline.online import StreamingSession
from ditto_research.pipeline.randomness import RunRandomness
from ditto_research.pipeline.session import TalkingHeadSession
from tests.helpers import write_landmark_file

BASE = ["model=tiny", "progress=false", "sampler.steps=3"]
ENCODER = [*BASE, "face=mediapipe", "audio_encoder=untrained"]


@pytest.fixture(scope="module")
def engine():
    e = Engine.from_overrides(ENCODER)
    yield e
    e.close()


@pytest.fixture(scope="module")
def clip(engine):
    source = engine.register(example_source())
    yield source, synthetic_speech(1.0)
    source.media.close()


def precomputed_engine(path, *extra: str) -> Engine:
    return Engine.from_overrides(
        [*BASE, "face=mediapipe", "audio_encoder=precomputed", f"audio_encoder.path={path}", *extra]
    )


class Conditions(PipelineObserver):
    def __init__(self) -> None:
        self.rows: list[tuple[int, np.ndarray]] = []

    def on_conditions(self, start, cond):
        self.rows.append((start, np.array(cond)))


def test_precomputed_features_are_used_as_they_are(engine, clip, tmp_path):
    source, audio = clip
    features = engine.speech_features(audio)
    assert features.shape == (num_video_frames(len(audio)), 1024)
    np.save(tmp_path / "f.npy", np.concatenate([features, features[:7]]))  # extra rows are ignored
    other = precomputed_engine(tmp_path / "f.npy")
    seen = Conditions()
    motion = other.generate_motion(audio, source, observers=[seen])
    (start, cond), *more = seen.rows
    assert start == 0 and not more
    np.testing.assert_array_equal(cond[:, :1024], features)  # the rows, untouched, in the audio columns
    # The encoder's own run: the same features (up to BLAS rounding of the stub encoder), the same motion.
    np.testing.assert_allclose(motion, engine.generate_motion(audio, source), rtol=0, atol=1e-4)
    with pytest.raises(ConfigError, match="audio_encoder=precomputed reads features from audio_encoder.path"):
        _ = other.encoder


def test_too_few_rows_fail_before_registration(engine, tmp_path, monkeypatch):
    audio = synthetic_speech(1.0)
    np.save(tmp_path / "f.npy", engine.speech_features(audio)[:-3])
    wav = write_wav(tmp_path / "a.wav", audio)
    other = precomputed_engine(tmp_path / "f.npy")
    session = TalkingHeadSession(other)
    monkeypatch.setattr(other, "register", lambda *a, **k: pytest.fail("registered before the check"))
    with pytest.raises(InputError, match=r"has 22 feature rows but .*a\.wav needs 25"):
        session.generate(example_source(), wav, tmp_path / "out.mp4")
    assert not list(tmp_path.glob("*.mp4"))


def test_precomputed_online_streams_the_rows_after_the_silence(engine, clip, tmp_path):
    source, audio = clip
    overlap = engine.cfg.motion.overlap_v2
    rows = online_features(audio, engine.encoder, tuple(engine.cfg.mode.chunksize))
    silence = engine.silence_features(overlap)
    np.savez(tmp_path / "f.npz", features=rows, silence=silence)
    wav = write_wav(tmp_path / "a.wav", audio)
    seen, frames = Conditions(), []
    streaming = StreamingSession(precomputed_engine(tmp_path / "f.npz", "mode=online"))
    streaming.run_file(
        example_source(), wav, None, observers=[seen], on_frame=lambda f: frames.append(f.index)
    )
    assert frames == list(range(num_video_frames(len(audio))))
    buffer = np.concatenate([silence, rows])  # the stream's rows: the silence prefix, then the file's
    for start, cond in seen.rows:
        first = start + overlap
        got = cond[: max(0, len(buffer) - first), :1024]
        np.testing.assert_array_equal(got, buffer[first : first + len(got)], err_msg=f"window at {start}")
    assert seen.rows[0][0] == -overlap
    np.save(tmp_path / "no_silence.npy", rows)
    with pytest.raises(InputError, match="mode=online needs the features of 10 silent frames"):
        StreamingSession(precomputed_engine(tmp_path / "no_silence.npy", "mode=online")).start(source)


def test_given_landmarks_register_a_video_frame_by_frame(tmp_path):
    import cv2

    frames = [np.full((240, 320, 3), 40 * i, np.uint8) for i in range(3)]
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for f in frames:
        writer.write(f)
    writer.release()
    two = write_landmark_file(tmp_path / "two.npz", center=(160.0, 120.0), size=80.0, frames=2)
    eng = Engine.from_overrides([*BASE, "face=given", f"face.landmarks={two}", "face.min_face_size=0"])
    with pytest.raises(
        InputError, match="has landmarks for 2 source frame.s. but the source has more .frame 2"
    ):
        eng.register(video)
    three = write_landmark_file(tmp_path / "three.npz", center=(160.0, 120.0), size=80.0, frames=3)
    eng = Engine.from_overrides([*BASE, "face=given", f"face.landmarks={three}", "face.min_face_size=0"])
    registered = eng.register(video)
    try:
        assert len(registered) == 3
        # Each frame's crop follows that frame's 203 points (they drift by one pixel per frame in the file).
        shifts = [f.M_c2o[0, 2] for f in registered.frames]
        assert shifts[0] < shifts[1] < shifts[2]
    finally:
        registered.media.close()


class Everything(PipelineObserver):
    def __init__(self) -> None:
        self.calls: dict[str, list] = {}

    def _add(self, hook: str, *args) -> None:
        self.calls.setdefault(hook, []).append(args)

    def on_source_frame(self, index, record):
        self._add("source", index, record.crop512.shape, record.M_o2c.shape, record.lmk478.shape)

    def on_conditions(self, start, cond):
        self._add("conditions", start, cond.shape)

    def on_motion_window(self, window, kp_cond, motion):
        self._add("window", window, kp_cond.shape, motion.shape)

    def on_motion(self, index, motion):
        self._add("motion", index)

    def on_keypoints(self, index, x_s, x_d):
        self._add("keypoints", index, x_s.shape, x_d.shape)

    def on_warp(self, index, feature):
        self._add("warp", index, tuple(feature.shape))

    def on_render(self, index, image):
        self._add("render", index, image.shape, image.dtype)


def test_offline_observers_see_every_boundary(engine, tmp_path):
    audio = synthetic_speech(4.0)  # 100 frames: two LMDM windows
    wav = write_wav(tmp_path / "a.wav", audio)
    seen = Everything()
    TalkingHeadSession(engine).generate(example_source(), wav, None, observers=[seen])
    n = num_video_frames(len(audio))
    c = seen.calls
    assert c["source"] == [(0, (512, 512, 3), (3, 3), (1, 478, 3))]
    assert c["conditions"] == [(0, (n, engine.networks.lmdm.cond_dim))]
    assert c["window"] == [(0, (1, 265), (80, 265)), (1, (1, 265), (80, 265))]
    assert [a[0] for a in c["motion"]] == list(range(n))
    assert (
        sorted(a[0] for a in c["keypoints"]) == list(range(n)) and c["keypoints"][0][1:] == ((1, 21, 3),) * 2
    )
    assert sorted(a[0] for a in c["warp"]) == list(range(n))
    assert sorted(a[0] for a in c["render"]) == list(range(n)) and c["render"][0][1:] == (
        (512, 512, 3),
        np.float32,
    )


def test_online_observers_see_windows_and_conditions(engine, tmp_path):
    audio = synthetic_speech(1.0)
    seen = Everything()
    StreamingSession(engine).run_file(
        example_source(), write_wav(tmp_path / "a.wav", audio), None, observers=[seen]
    )
    starts = [a[0] for a in seen.calls["conditions"]]
    assert starts[0] == -engine.cfg.motion.overlap_v2 and starts == sorted(starts)  # the silence prefix first
    assert len(seen.calls["window"]) == len(starts) and len(seen.calls["source"]) == 1
    assert sorted(a[0] for a in seen.calls["render"]) == list(range(num_video_frames(len(audio))))


def test_randomness_factory_replaces_both_streams_once_per_run(clip):
    source, audio = clip
    made: list[RunRandomness] = []

    def factory() -> RunRandomness:
        made.append(RunRandomness(NumpyNoise(np.random.RandomState(11)), random.Random(3)))
        return made[-1]

    eng = Engine.from_overrides(ENCODER, randomness=factory)
    frames = list(TalkingHeadSession(eng).frames(source, audio))
    assert len(made) == 1 and made[0].noise.draws == eng.cfg.sampler.steps  # 2 step noises + 1 x_T
    # control.noise=numpy seeded with the same seed draws the same stream.
    numpy_engine = Engine.from_overrides([*ENCODER, "control.noise=numpy", "control.seed=11"])
    again = list(TalkingHeadSession(numpy_engine).frames(source, audio))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, again, strict=True))
    torch_engine = Engine.from_overrides([*ENCODER, "control.seed=11"])
    np.testing.assert_raises(
        AssertionError,
        np.testing.assert_array_equal,
        torch_engine.generate_motion(audio, source),
        numpy_engine.generate_motion(audio, source),
    )


def test_numpy_noise_is_the_reference_numpy_path():
    np.random.seed(5)
    expected = [np.random.randn(1, 4, 3).astype(np.float32) for _ in range(3)]
    noise = make_noise("numpy", 5)
    for want in expected:
        np.testing.assert_array_equal(noise.randn((1, 4, 3)).numpy(), want)
    torch.manual_seed(5)
    want = torch.randn(2, 3)
    np.testing.assert_array_equal(make_noise("torch", 5).randn((2, 3)), want)
    with pytest.raises(ConfigError, match="control.noise='jax' is not valid; choose one of: torch, numpy"):
        make_noise("jax", 0)


def test_blink_schedule_draws_in_the_reference_order(engine, clip, tmp_path):
    """The reference builds a 3000-frame schedule at setup, then the clip's: the same seed, the same
    blinks."""
    source, _ = clip
    np.save(tmp_path / "blink.npy", np.full((6, 63), 0.01, np.float32))
    control = replace(engine.cfg.control, delta_eye_arr=str(tmp_path / "blink.npy"), delta_eye_open_n=0)
    eng = engine.derive(replace(engine.cfg, control=control))
    stitcher = eng.stitcher(source, 400, RunRandomness(make_noise("torch", 0), random.Random(1234)))
    rng = random.Random(1234)
    blink_schedule(UNKNOWN_LENGTH_FRAMES, 6, 0, rng)
    assert stitcher.blink_indices == blink_schedule(400, 6, 0, rng)
    assert any(stitcher.blink_indices)


def test_one_frame_registers_as_the_source_registration_does(engine):
    """register_frame is the one per-frame path: a frame registered on its own (as training-data preparation
    will) gives what registering it as the source gave, and observers saw that same record."""
    from ditto_research.pipeline.registration import register_frame

    records = []

    class Seen(PipelineObserver):
        def on_source_frame(self, index, record):
            records.append(record)

    source = engine.register(example_source(), [Seen()])
    try:
        rgb = source.media.frame(0, mirror=False)
        alone = register_frame(rgb, None, engine.frontend, engine.networks.motion_extractor, engine.cfg.face)
        kept = source.frames[0]
        assert len(records) == 1 and records[0].frame is kept
        for key, value in kept.x_s_info.items():
            np.testing.assert_array_equal(alone.frame.x_s_info[key], value, err_msg=key)
        np.testing.assert_array_equal(alone.frame.eye_open, kept.eye_open)
        np.testing.assert_array_equal(alone.frame.eye_ball, kept.eye_ball)
        np.testing.assert_array_equal(alone.crop512, records[0].crop512)
    finally:
        source.media.close()
