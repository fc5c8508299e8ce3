"""Online (streaming) mode: reference window semantics, chunk-size invariance, frame counts, bad input,
failures.

The reference semantics are checked against ``_reference_worker``, a restatement of the index logic of the
original ``stream_pipeline_online._audio2motion_worker`` (item buffer, prefix rows, local/global indices,
first window, emission window, trimming) driving a stub sampler.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ditto_research.audio.features import offline_features
from ditto_research.errors import InputError, StageError
from ditto_research.examples import example_source, synthetic_speech
from ditto_research.media.writer import probe_video
from ditto_research.motion.audio2motion import Audio2MotionSettings, MotionWindowState
from ditto_research.motion.format import clip_motion
from ditto_research.motion.online import REFERENCE_PREFIX_CHUNKSIZE, OnlineMotionGenerator
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.latency import LatencyTracker, as_mono_16k
from ditto_research.pipeline.observers import PipelineObserver
from ditto_research.pipeline.online import StreamingSession
from ditto_research.pipeline.stages import FrameImage

OVERRIDES = ["model=tiny", "audio_encoder=untrained", "face=mediapipe", "sampler.steps=2", "progress=false"]
D_FEAT, D_MOTION = 6, 265


#  the reference index logic, with a stub sampler ------------------------------------------------------------


class StubSampler:
    """Deterministic (kp_cond, cond) -> window that depends on both and on the call count."""

    def __init__(self, seq: int, cond_dim: int) -> None:
        rng = np.random.RandomState(1)
        self.weight = torch.from_numpy(rng.standard_normal((cond_dim, D_MOTION)).astype(np.float32))
        self.calls = 0

    def __call__(self, kp_cond: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(cond @ self.weight) + 0.5 * kp_cond[:, None, :] + 0.01 * self.calls


def stub_condition(feats: np.ndarray, idx: int) -> np.ndarray:
    frames = (idx + np.arange(feats.shape[0], dtype=np.float32))[:, None]
    return np.concatenate([feats, 0.05 * frames], axis=1).astype(np.float32)


def _reference_worker(items, prefix, settings, value_range=None):
    """Emitted (buffer row, motion row) pairs, d0 and the first window's motion, as the reference computes
    them."""
    seq, valid = settings.seq_frames, settings.valid_clip_len
    sample = StubSampler(seq, D_FEAT + 1)
    state = MotionWindowState(np.linspace(-1, 1, D_MOTION, dtype=np.float32), settings)
    audio_feat, cond_idx_start = prefix.copy(), -prefix.shape[0]
    item_buffer = np.zeros((0, D_FEAT), np.float32)
    valid_start, res_offset, local_idx, global_idx = None, 0, 0, 0
    emitted, d0, first = [], None, None
    for item in [*items, None]:
        is_end = item is None
        if not is_end:
            item_buffer = np.concatenate([item_buffer, item])
        if not is_end and item_buffer.shape[0] < valid:
            continue
        audio_feat, item_buffer = np.concatenate([audio_feat, item_buffer]), item_buffer[:0]
        while True:
            aud, real_valid = audio_feat[local_idx : local_idx + seq], valid
            if len(aud) == 0:
                break
            if len(aud) < seq:
                if not is_end:
                    break
                real_valid = len(aud)
                aud = np.concatenate([aud, np.repeat(aud[-1:], seq - len(aud), axis=0)])
            cond = torch.from_numpy(stub_condition(aud, global_idx + cond_idx_start))[None]
            window = sample(torch.from_numpy(state.kp_cond[None].copy()), cond)[0].numpy()
            res = state.add_window(window)
            if valid_start is None:
                valid_start = res.shape[0] - settings.fuse_length
                d0, first = clip_motion(res[:1].copy(), value_range)[0], res.copy()
                local_idx += real_valid
                global_idx += real_valid
                continue
            rows = clip_motion(res[valid_start : valid_start + real_valid].copy(), value_range)
            emitted += [(res_offset + valid_start + j, row) for j, row in enumerate(rows)]
            valid_start += real_valid
            local_idx += real_valid
            global_idx += real_valid
            cut = state.keep_last(2 * seq)
            valid_start, res_offset = valid_start - cut, res_offset + cut
            if local_idx >= len(audio_feat):
                break
        if len(audio_feat) > 2 * seq:
            cut = len(audio_feat) - 2 * seq
            audio_feat, local_idx = audio_feat[cut:], local_idx - cut
        if is_end:
            break
    return emitted, d0, first


def _ours(groups, prefix, settings, num_frames, value_range=None, tail=None):
    gen = OnlineMotionGenerator(
        StubSampler(settings.seq_frames, D_FEAT + 1),
        stub_condition,
        np.linspace(-1, 1, D_MOTION, dtype=np.float32),
        settings,
        prefix,
        value_range,
    )
    rows = [row for group in groups for row in gen.push(group)]
    return np.array(rows + gen.finish(num_frames, tail)), gen.d0


def _split(rows: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(rows, np.cumsum(sizes)[:-1]) if sizes else [rows]


@pytest.mark.parametrize(("seq", "overlap"), [(80, 70), (80, 10), (20, 12), (20, 10), (20, 5), (16, 0)])
@pytest.mark.parametrize("num_frames", [1, 7, 23, 64, 131])
def test_generator_follows_the_reference_online_worker(seq, overlap, num_frames):
    settings = Audio2MotionSettings(seq_frames=seq, overlap_v2=overlap, smo_k_d=3, fuse_mode="online")
    rng = np.random.RandomState(num_frames)
    feats = rng.standard_normal((5 * math.ceil((num_frames + 3) / 5), D_FEAT)).astype(np.float32)
    prefix = rng.standard_normal((overlap, D_FEAT)).astype(np.float32)
    value_range = np.stack([np.full(D_MOTION, -1.2, np.float32), np.full(D_MOTION, 1.3, np.float32)])
    ref, ref_d0, ref_first = _reference_worker(
        _split(feats, [5] * (len(feats) // 5)), prefix, settings, value_range
    )

    # Rows of frames whose audio has arrived go to push() in random groups; the padded tail goes to finish().
    arrived = num_frames - rng.randint(0, min(num_frames, 3) + 1)
    sizes = list(rng.randint(1, 9, size=arrived))
    sizes = [s for s in np.diff(np.minimum(np.cumsum([0] + sizes), arrived)) if s > 0]
    groups = _split(feats[:arrived], sizes) if arrived else []
    ours, d0 = _ours(groups, prefix, settings, num_frames, value_range, tail=feats[arrived:])

    assert ours.shape == (num_frames, D_MOTION)
    np.testing.assert_array_equal(d0, ref_d0)
    rows = dict(ref)
    assert sorted(rows) == list(range(min(rows, default=0), min(rows, default=0) + len(rows)))  # contiguous
    start = overlap + max(settings.valid_clip_len - overlap, 0)  # where the reference starts emitting
    assert not rows or min(rows) == start
    for i in range(num_frames):
        if overlap + i in rows:
            np.testing.assert_array_equal(ours[i], rows[overlap + i], err_msg=f"frame {i}")
        else:
            # Frames of the first window that the reference never emits: before its start row when
            # overlap < valid_clip_len, or all of them when the first window is also the last.
            assert overlap + i < start or not rows
            np.testing.assert_array_equal(ours[i], clip_motion(ref_first[overlap + i][None], value_range)[0])


def test_generator_is_invariant_to_row_grouping_and_bounded():
    settings = Audio2MotionSettings(seq_frames=20, overlap_v2=15, fuse_mode="online")
    feats = np.random.RandomState(0).standard_normal((400, D_FEAT)).astype(np.float32)
    prefix = np.zeros((15, D_FEAT), np.float32)
    whole, _ = _ours([feats[:397]], prefix, settings, 397, tail=feats[397:])
    ones, _ = _ours(list(feats[:397, None]), prefix, settings, 397, tail=feats[397:])
    np.testing.assert_array_equal(whole, ones)
    gen = OnlineMotionGenerator(
        StubSampler(20, D_FEAT + 1), stub_condition, np.zeros(D_MOTION, np.float32), settings, prefix
    )
    for row in feats:
        gen.push(row[None])
        assert gen.state.motion is None or gen.state.motion.shape[0] <= 2 * 20 + settings.valid_clip_len
        assert gen._feat.shape[0] <= 20 + 1
    gen.finish(397)
    with pytest.raises(InputError, match="after finish"):
        gen.push(feats[:1])


# --- the streaming session ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session() -> StreamingSession:
    s = StreamingSession.from_overrides(OVERRIDES + ["motion.overlap_v2=70"], render=False)
    yield s
    s.release()


@pytest.fixture(scope="module")
def source(session):
    return session.engine.register(example_source())


class KeepMotion(PipelineObserver):
    def __init__(self) -> None:
        self.rows: dict[int, np.ndarray] = {}

    def on_motion(self, index, motion):
        self.rows[index] = motion


def stream_motion(session: StreamingSession, source, audio: np.ndarray, sizes) -> np.ndarray:
    keep = KeepMotion()
    motion = keep.rows
    session.start(source, observers=[keep])
    first = 0
    for size in sizes:
        session.push(audio[first : first + size])
        first += size
    session.push(audio[first:])
    session.close()
    indices = [item.index for item in session.frames()]
    assert indices == list(range(len(motion))) == sorted(motion)
    return np.array([motion[i] for i in range(len(motion))])


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(("stage-", "source", "stream-"))}


@pytest.mark.parametrize(("overlap", "seconds"), [(70, 2.3), (10, 4.5)])
def test_motion_is_identical_whatever_the_chunking(session, source, overlap, seconds):
    cfg = replace(session.cfg, motion=replace(session.cfg.motion, overlap_v2=overlap))
    session = StreamingSession(Engine(cfg), render=False)
    audio = synthetic_speech(seconds)
    n = math.ceil(audio.shape[0] / 16000 * 25)
    reference = stream_motion(session, source, audio, [audio.shape[0]])
    assert reference.shape == (n, 265)
    rng = np.random.RandomState(0)
    for name, sizes in {
        "1 sample": [1] * 9000,  # then the rest in one piece: 1-sample pushes through the first window
        "640": [640] * (audio.shape[0] // 640),
        "3200": [3200] * (audio.shape[0] // 3200),
        "16000": [16000] * (audio.shape[0] // 16000),
        "random": list(rng.randint(1, 5000, size=40)),
    }.items():
        np.testing.assert_array_equal(stream_motion(session, source, audio, sizes), reference, err_msg=name)
    assert not _threads()


def test_int16_chunks_equal_float_chunks(session, source):
    pcm = (synthetic_speech(1.0) * 32767).astype(np.int16)
    as_float = stream_motion(session, source, pcm.astype(np.float32) / 32768.0, [4000])
    np.testing.assert_array_equal(stream_motion(session, source, pcm, [4000]), as_float)


@pytest.mark.parametrize("num_samples", [1, 639, 640, 641, 7000, 32000])
def test_online_frame_count_is_the_offline_count(session, source, num_samples):
    audio = synthetic_speech(num_samples / 16000 + 0.01)[:num_samples]
    assert stream_motion(session, source, audio, [997]).shape[0] == math.ceil(num_samples / 16000 * 25)


def test_prefix_is_silence_features_with_the_reference_chunksize(session):
    feats = session.engine.silence_features(70)
    expected = offline_features(
        np.zeros(70 * 640, np.float32), session.engine.encoder, REFERENCE_PREFIX_CHUNKSIZE
    )
    np.testing.assert_array_equal(feats, expected[:70])


def test_frames_come_out_while_audio_is_still_arriving(session, source):
    """overlap 70: a window every 10 frames, so 2 s of audio yield frames before close()."""
    got: list[int] = []
    session.start(source, on_frame=lambda item: got.append(item.index))
    session.push(synthetic_speech(2.0))
    for _ in range(500):
        if len(got) >= 30:
            break
        threading.Event().wait(0.02)
    early = len(got)
    session.close()
    assert 30 <= early < 50 and got == list(range(50))
    report = session.latency
    assert report.frames == 50 and report.first_frame_s is not None and report.p95_s >= report.p50_s


@pytest.mark.parametrize(
    ("chunk", "kwargs", "message"),
    [
        (np.zeros(100, np.int32), {}, "float32 in \\[-1, 1\\] or int16, got dtype int32"),
        (np.zeros(100, np.uint8), {}, "dtype uint8"),
        (np.zeros(100, np.complex64), {}, "dtype complex64"),
        (np.zeros((100, 2), np.float32), {}, "mono.*shape \\(100, 2\\).*mix the channels"),
        (np.zeros((2, 3, 4), np.float32), {}, "shape \\(2, 3, 4\\)"),
        (np.array([0.0, np.nan], np.float32), {}, "NaN"),
        (np.zeros(100, np.float32), {"sample_rate": 44100}, "16000 Hz, got sample_rate=44100"),
        ([0.0, 0.1], {}, "numpy array"),
    ],
)
def test_bad_chunks_are_input_errors(chunk, kwargs, message):
    with pytest.raises(InputError, match=message):
        as_mono_16k(chunk, **kwargs)


def test_bad_chunk_leaves_the_stream_usable_and_push_after_close_fails(session, source):
    with pytest.raises(InputError, match="before start"):
        StreamingSession(session.engine, render=False).push(np.zeros(10, np.float32))
    session.start(source)
    with pytest.raises(InputError, match="int16"):
        session.push(np.zeros(10, np.int64))
    session.push(np.zeros((800, 1), np.float32))
    session.close()
    session.close()  # twice is fine
    with pytest.raises(InputError, match="after close"):
        session.push(np.zeros(10, np.float32))
    assert [f.index for f in session.frames()] == [0, 1]
    assert not _threads()


def test_stage_failure_mid_stream_stops_cleanly(session, source, monkeypatch):
    import ditto_research.pipeline.engine as engine_module

    calls = {"n": 0}
    build = engine_module.build_window_sampler

    def build_failing(*args, **kwargs):
        sample = build(*args, **kwargs)

        def failing(kp_cond, cond):
            calls["n"] += 1
            if calls["n"] > 3:  # the fourth LMDM window fails
                raise RuntimeError("simulated LMDM failure")
            return sample(kp_cond, cond)

        return failing

    monkeypatch.setattr(engine_module, "build_window_sampler", build_failing)
    session.start(source)
    session.push(synthetic_speech(3.0))
    session.close()
    got = []
    with pytest.raises(
        StageError, match="stage 'motion' failed: RuntimeError: simulated LMDM failure"
    ) as info:
        for item in session.frames():
            got.append(item.index)
    assert info.value.stage == "motion"
    assert got == list(range(len(got))) and len(got) >= 10  # what came out before the failure stays valid
    assert not _threads()
    session.start(source)
    session.push(synthetic_speech(3.0))
    for _ in range(1000):  # the stream fails while nobody iterates
        if session.error is not None:
            break
        threading.Event().wait(0.02)
    with pytest.raises(StageError, match="simulated"):
        session.push(np.zeros(10, np.float32))
    with pytest.raises(StageError, match="simulated"):
        list(session.frames())
    assert not _threads()


def test_leaving_frames_early_cancels_and_joins(session, source):
    session.start(source)
    session.push(synthetic_speech(3.0))
    for item in session.frames():
        assert item.index == 0
        break
    assert not _threads()
    with pytest.raises(InputError, match="cancel"):
        session.push(np.zeros(10, np.float32))


def test_latency_tracker_percentiles_and_deadlines():
    tracker = LatencyTracker()
    tracker.audio_pushed(640, 1.0)
    tracker.audio_pushed(1920, 1.1)
    tracker.audio_closed(2000, 1.2)
    assert tracker.frame_out(0, 1.5) == pytest.approx(0.5)
    assert tracker.frame_out(1, 1.5) == pytest.approx(0.4)  # frame 1's audio came with the second push
    assert tracker.frame_out(2, 1.57) == pytest.approx(0.47)
    assert tracker.frame_out(3, 1.6) == pytest.approx(0.4)  # last partial frame: arrived at close
    report = tracker.report()
    assert report.frames == 4 and report.first_frame_s == pytest.approx(0.5)
    assert report.max_s == pytest.approx(0.5) and report.missed_deadlines == 0
    assert report.p50_s == pytest.approx(np.percentile([0.5, 0.4, 0.47, 0.4], 50))
    tracker2 = LatencyTracker()
    tracker2.frame_out(0, 0.0)
    tracker2.frame_out(1, 0.2)  # deadline 0.04
    assert tracker2.report().missed_deadlines == 1


def test_streamed_frames_and_mp4_match_offline(session, source, tmp_path):
    """Rendered online: FrameImage items in order, the offline frame count, and a muxed MP4 in real time."""
    render = StreamingSession(session.engine)
    audio = synthetic_speech(0.25)
    render.start(source)
    feeder = threading.Thread(
        target=lambda: (render.push(audio[:1000]), render.push(audio[1000:]), render.close())
    )
    feeder.start()
    got = list(render.frames())
    feeder.join()
    assert [f.index for f in got] == list(range(math.ceil(0.25 * 25)))
    assert got[1].timestamp_s == pytest.approx(0.04)
    assert got[0].image.dtype == np.uint8 and got[0].image.shape == (512, 512, 3)

    from ditto_research.audio.io import write_wav

    wav = write_wav(tmp_path / "speech.wav", audio)
    out = tmp_path / "online.mp4"
    result = render.run_file(example_source(), wav, out, realtime=True)
    frames, fps, width, height, audio_s = probe_video(out)
    assert frames == result.frames == math.ceil(audio.shape[0] / 16000 * 25)
    assert (fps, width, height) == (25.0, 512, 512) and audio_s is not None
    assert result.latency.frames == frames and result.latency.first_frame_s is not None
    assert result.seconds >= 0.25  # fed at 1x speed
    assert set(result.stage_ms_per_frame) == {"features", "motion", "stitch", "warp", "decode", "paste"}
    assert not _threads()


def test_render_failure_keeps_emitted_frames_and_callback_close_raises(session, source, monkeypatch):
    render = StreamingSession(session.engine)
    warp = session.engine.networks.warp_network.module
    calls = {"n": 0}
    original = type(warp).forward

    got: list[FrameImage] = []

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            for _ in range(500):  # fail once the first two frames are out (in-flight frames are dropped)
                if len(got) >= 2:
                    break
                threading.Event().wait(0.02)
            raise RuntimeError("simulated warp failure")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(warp), "forward", failing)
    render.start(source, on_frame=got.append)
    render.push(synthetic_speech(0.3))
    with pytest.raises(StageError, match="stage 'warp' failed") as info:
        render.close()
    assert info.value.stage == "warp"
    assert [f.index for f in got] == [0, 1] and all(f.image.shape == (512, 512, 3) for f in got)
    assert not _threads()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_memory_is_bounded_on_a_long_stream(session, source):
    """90 s of audio through features + motion: RSS after warm-up does not grow with the stream."""
    audio = synthetic_speech(5.0)
    session.start(source, on_frame=lambda item: None)
    rss = []
    for second in range(90):
        session.push(audio[(second % 5) * 16000 : (second % 5 + 1) * 16000])
        if second % 10 == 9:
            while session.latency.frames < 25 * (second + 1) - 100:
                threading.Event().wait(0.02)
            rss.append(_rss_mb())
    session.close()
    assert session.latency.frames == 90 * 25
    print("RSS MB every 10 s of audio:", [round(r, 1) for r in rss])
    assert max(rss[2:]) - rss[1] < 15, rss


def test_ring_buffer_keeps_the_last_values_and_the_total():
    from ditto_research.pipeline.latency import RingBuffer

    ring = RingBuffer(3)
    assert len(ring) == 0 and ring.values().shape == (0,)
    for v in (1.0, 2.0):
        ring.append(v)
    assert ring.values().tolist() == [1.0, 2.0]
    for v in (3.0, 4.0, 5.0):
        ring.append(v)
    assert ring.values().tolist() == [3.0, 4.0, 5.0] and list(ring) == [3.0, 4.0, 5.0]
    assert len(ring) == 3 and ring.total == 15.0


def test_a_failure_on_the_feeder_thread_reaches_the_caller(session, tmp_path, monkeypatch):
    """Whatever breaks the thread that pushes a file's audio ends the run with that error (no hang)."""
    from ditto_research.audio.io import write_wav

    wav = write_wav(tmp_path / "a.wav", synthetic_speech(3.0))
    real_push, calls = StreamingSession.push, {"n": 0}

    def push(self, samples, *args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated bug on the feeder thread")
        return real_push(self, samples, *args)

    monkeypatch.setattr(StreamingSession, "push", push)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="simulated bug on the feeder thread"):
        session.run_file(example_source(), wav, tmp_path / "out.mp4")
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "out.mp4").exists() and not _threads()


def test_the_latency_module_s_old_name_still_imports_with_a_warning() -> None:
    import importlib
    import sys

    sys.modules.pop("ditto_research.pipeline.streaming", None)
    with pytest.warns(DeprecationWarning, match="renamed ditto_research.pipeline.latency"):
        old = importlib.import_module("ditto_research.pipeline.streaming")
    from ditto_research.pipeline import latency

    assert old.LatencyTracker is latency.LatencyTracker
