"""``audio_encoder=precomputed``: feature rows read from a file, offline and streamed."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_research.audio.encoders import UntrainedEncoder
from ditto_research.audio.features import OnlineFeatureStream
from ditto_research.audio.precomputed import PrecomputedFeatures
from ditto_research.config import compose, to_config
from ditto_research.errors import ConfigError, InputError


def _rows(n: int, width: int = 1024, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


def test_npy_and_npz_files_load(tmp_path):
    np.save(tmp_path / "f.npy", _rows(12).astype(np.float64))
    plain = PrecomputedFeatures.load(tmp_path / "f.npy")
    assert plain.features.dtype == np.float32 and plain.features.shape == (12, 1024) and plain.silence is None
    np.savez(tmp_path / "f.npz", features=_rows(12), silence=_rows(10, seed=1))
    both = PrecomputedFeatures.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(both.silence_rows(10), _rows(10, seed=1))
    np.testing.assert_array_equal(both.for_frames(5), _rows(12)[:5])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            _rows(12, width=768),
            "is a float32 array of shape (12, 768); expected (N, 1024) float rows at 25 Hz",
        ),
        (np.zeros((2, 3, 1024), np.float32), "shape (2, 3, 1024); expected (N, 1024)"),
        (np.full((4, 1024), np.nan, np.float32), "holds NaN or infinite values"),
        (np.zeros((0, 1024), np.float32), "shape (0, 1024)"),
    ],
    ids=["width", "3d", "nan", "empty"],
)
def test_bad_arrays_are_one_line_naming_the_file_and_shape(tmp_path, content, expected):
    path = tmp_path / "f.npy"
    np.save(path, content)
    with pytest.raises(InputError) as info:
        PrecomputedFeatures.load(path)
    assert str(path) in str(info.value) and expected in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_npz_without_features(tmp_path):
    with pytest.raises(InputError, match="does not exist; give a .npy of"):
        PrecomputedFeatures.load(tmp_path / "none.npy")
    np.savez(tmp_path / "x.npz", rows=_rows(3))
    with pytest.raises(InputError, match="has no 'features' array .it has rows."):
        PrecomputedFeatures.load(tmp_path / "x.npz")


def test_too_few_rows_and_no_silence_are_clear(tmp_path):
    np.save(tmp_path / "f.npy", _rows(10))
    feats = PrecomputedFeatures.load(tmp_path / "f.npy")
    with pytest.raises(InputError) as info:
        feats.for_frames(12, "speech.wav")
    assert "has 10 feature rows but speech.wav needs 12 (one per 40 ms frame): expected (12, 1024)" in str(
        info.value
    )
    with pytest.raises(InputError, match="mode=online needs the features of 10 silent frames"):
        feats.silence_rows(10)


@pytest.mark.parametrize("pieces", [[16000], [333] * 50, [3200, 1, 6479, 6000]])
def test_stream_serves_rows_at_the_pace_of_a_live_encoder(tmp_path, pieces):
    """Each completed online chunk yields the next rows, exactly when a live encoder's stream would."""
    total = sum(pieces)
    rows = _rows(total // 640 + 8)
    np.save(tmp_path / "f.npy", rows)
    stream = PrecomputedFeatures.load(tmp_path / "f.npy").stream((3, 5, 2))
    live = OnlineFeatureStream(UntrainedEncoder(0), (3, 5, 2))
    audio = np.zeros(total, np.float32)
    ours, theirs, start = [], [], 0
    for size in pieces:
        got, want = stream.push(audio[start : start + size]), live.push(audio[start : start + size])
        assert [len(r) for r in got] == [len(r) for r in want]
        ours += got
        theirs += want
        start += size
    tail, live_tail = stream.flush(), live.flush()
    assert [len(r) for r in tail] == [len(r) for r in live_tail]
    served = np.concatenate(ours + tail)
    covered = min(len(served), len(rows))
    np.testing.assert_array_equal(served[:covered], rows[:covered])


def test_stream_refuses_audio_longer_than_the_file(tmp_path):
    np.save(tmp_path / "f.npy", _rows(20))
    stream = PrecomputedFeatures.load(tmp_path / "f.npy").stream((3, 5, 2))
    with pytest.raises(InputError, match="has 20 feature rows but the streamed audio needs"):
        stream.push(np.zeros(40 * 640, np.float32))
        stream.flush()


def test_config_validates_the_file_at_compose_time(tmp_path):
    np.save(tmp_path / "f.npy", _rows(5))
    cfg = to_config(
        compose("infer", ["model=tiny", "audio_encoder=precomputed", f"audio_encoder.path={tmp_path}/f.npy"])
    )
    assert cfg.audio_encoder_name == "precomputed"
    with pytest.raises(ConfigError, match="audio_encoder=precomputed needs audio_encoder.path=FILE"):
        to_config(compose("infer", ["model=tiny", "audio_encoder=precomputed", "audio_encoder.path=null"]))
    np.save(tmp_path / "g.npy", _rows(5, width=10))
    with pytest.raises(ConfigError, match=r"shape \(5, 10\); expected \(N, 1024\)"):
        to_config(
            compose(
                "infer", ["model=tiny", "audio_encoder=precomputed", f"audio_encoder.path={tmp_path}/g.npy"]
            )
        )


def test_the_config_reads_the_file_once_and_the_engine_uses_what_it_read(tmp_path):
    """audio_encoder.path (precomputed) is parsed when the config validates; the engine's rows are that
    content (the file may be gone by then)."""
    from ditto_research.pipeline.engine import Engine

    np.save(tmp_path / "f.npy", _rows(12))
    overrides = [
        "model=tiny",
        "face=mediapipe",
        "audio_encoder=precomputed",
        f"audio_encoder.path={tmp_path}/f.npy",
    ]
    cfg = to_config(compose("infer", overrides))
    read = cfg.audio_encoder.precomputed_features()
    (tmp_path / "f.npy").unlink()
    assert cfg.audio_encoder.precomputed_features() is read
    np.testing.assert_array_equal(read.features, _rows(12))
    assert Engine(cfg).features_file is read
    assert to_config(compose("infer", ["model=tiny"])).audio_encoder.precomputed_features() is None
