"""HuBERT feature windows: golden parity (stub encoder), other chunk sizes, streaming equivalence."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from ditto_research.audio.features import (
    ChunkLayout,
    OnlineChunker,
    OnlineFeatureStream,
    StubEncoder,
    chunk_features,
    offline_features,
    online_chunks,
    online_features,
)
from ditto_research.errors import ConfigError, InputError
from tests.helpers import max_abs_err

# The stub's float32 matmul sums in another order than the reference's: measured max abs error 4.5e-7 on
# values in [-1, 1] (chunk encoding; 3.1e-7 on the features). 2e-6 = 4.5x that; no fp64 yardstick.
TOL = 2e-6
GOLDEN_KEY = re.compile(r"cs(\d)(\d)(\d)_offline")


@pytest.fixture(scope="module")
def golden(load_golden) -> dict[str, np.ndarray]:
    return load_golden("wav2feat")


@pytest.fixture(scope="module")
def stub(golden: dict[str, np.ndarray]) -> StubEncoder:
    return StubEncoder(int(golden["stub_W_seed"]), dim=golden["stub_W"].shape[1])


@pytest.fixture(scope="module")
def golden_chunksizes(golden: dict[str, np.ndarray]) -> dict[str, tuple[int, int, int]]:
    """Key prefix -> HuBERT chunksize, read from the golden's key names (``cs352_offline``: (3, 5, 2))."""
    found = {}
    for key in golden:
        match = GOLDEN_KEY.fullmatch(key)
        if match:
            found[key.removesuffix("_offline")] = tuple(int(v) for v in match.groups())
    assert found, f"no cs<past><current><future>_offline array in the golden: {sorted(golden)}"
    return found


def test_stub_encoder_matches_golden(golden, stub: StubEncoder, golden_chunksizes) -> None:
    np.testing.assert_array_equal(stub.weight, golden["stub_W"])
    for prefix in golden_chunksizes:
        err = max_abs_err(stub(golden[f"{prefix}_chunk0"]), golden[f"{prefix}_chunk0_encoding"])
        assert err <= TOL, (prefix, err)


def test_offline_matches_golden(golden, stub: StubEncoder, golden_chunksizes) -> None:
    for prefix, chunksize in golden_chunksizes.items():
        ours = offline_features(golden["audio"], stub, chunksize=chunksize)
        err = max_abs_err(ours, golden[f"{prefix}_offline"])
        assert err <= TOL, (prefix, err)


def test_online_matches_golden(golden, stub: StubEncoder, golden_chunksizes) -> None:
    for prefix, chunksize in golden_chunksizes.items():
        chunks = list(online_chunks(golden["audio"], chunksize))
        np.testing.assert_array_equal(chunks[0], golden[f"{prefix}_chunk0"])
        assert all(c.shape == golden[f"{prefix}_chunk0"].shape for c in chunks)
        err = max_abs_err(online_features(golden["audio"], stub, chunksize), golden[f"{prefix}_online"])
        assert err <= TOL, (prefix, err)


def test_stream_equals_whole_clip(golden, stub: StubEncoder, golden_chunksizes) -> None:
    audio = golden["audio"]
    for chunksize in golden_chunksizes.values():
        whole = online_features(audio, stub, chunksize)
        rng = np.random.RandomState(0)
        cuts = np.sort(rng.randint(0, audio.shape[0], size=12))
        stream = OnlineFeatureStream(stub, chunksize)
        parts = []
        for piece in np.split(audio, cuts):
            parts += stream.push(piece)
        parts += stream.flush()
        assert all(p.shape == (chunksize[1], stub.dim) for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts), whole)
        with pytest.raises(InputError, match="after flush"):
            stream.push(audio[:10])


# --- chunk sizes other than the public golden: a literal transcription of the README's description ---


def _spec_offline(audio: np.ndarray, encode, cs: tuple[int, int, int]) -> np.ndarray:
    num_f = math.ceil(len(audio) / 16000 * 25)
    split_len = int(sum(cs) * 0.04 * 16000) + 80
    pad = np.concatenate(
        [
            np.zeros(split_len - int(sum(cs[1:]) * 0.04 * 16000), np.float32),
            audio,
            np.zeros(split_len, np.float32),
        ]
    )
    out = []
    for i in range(0, num_f, cs[1]):
        s = int(i * 0.04 * 16000)
        out.append(_spec_chunk(pad[s : s + split_len], encode, cs))
    return np.concatenate(out)[:num_f]


def _spec_chunk(chunk: np.ndarray, encode, cs: tuple[int, int, int]) -> np.ndarray:
    enc = encode(chunk)
    return enc[-sum(cs[1:]) * 2 : -cs[2] * 2].reshape(cs[1], 2, enc.shape[1]).mean(1)


def _spec_online(audio: np.ndarray, encode, cs: tuple[int, int, int]) -> np.ndarray:
    audio = np.concatenate([np.zeros(cs[0] * 640, np.float32), audio])
    split_len = int(sum(cs) * 0.04 * 16000) + 80
    out = []
    for i in range(0, len(audio), cs[1] * 640):
        c = audio[i : i + split_len]
        out.append(_spec_chunk(np.pad(c, (0, split_len - len(c))), encode, cs))
    return np.concatenate(out)


@pytest.mark.parametrize("chunksize", [(2, 4, 1), (4, 6, 3), (0, 3, 2), (3, 5, 2)])
@pytest.mark.parametrize("num_samples", [52800, 17000, 641])
def test_other_chunk_sizes(chunksize: tuple[int, int, int], num_samples: int) -> None:
    rng = np.random.RandomState(num_samples)
    audio = (0.3 * rng.standard_normal(num_samples)).astype(np.float32)
    enc = StubEncoder(seed=7, dim=64)
    ours_off = offline_features(audio, enc, chunksize)
    assert ours_off.shape == (math.ceil(num_samples / 640), 64)
    np.testing.assert_array_equal(ours_off, _spec_offline(audio, enc, chunksize))
    ours_on = online_features(audio, enc, chunksize)
    np.testing.assert_array_equal(ours_on, _spec_online(audio, enc, chunksize))
    chunker = OnlineChunker(chunksize)
    pieces = chunker.push(audio[:100]) + chunker.push(audio[100:]) + chunker.flush()
    whole = list(online_chunks(audio, chunksize))
    assert len(pieces) == len(whole)
    assert all(np.array_equal(a, b) for a, b in zip(pieces, whole))
    stream = OnlineFeatureStream(enc, chunksize)
    parts = stream.push(audio[: num_samples // 3]) + stream.push(audio[num_samples // 3 :]) + stream.flush()
    np.testing.assert_array_equal(np.concatenate(parts), ours_on)


def test_layout_constants_default() -> None:
    layout = ChunkLayout.from_chunksize((3, 5, 2))
    assert (layout.window_samples, layout.hop_samples, layout.lead_in_samples, layout.offline_front_pad) == (
        6480,
        3200,
        1920,
        2000,
    )
    assert layout.valid_rows(20) == slice(6, 16)


def test_zero_future_keeps_the_last_rows() -> None:
    enc = StubEncoder(seed=3, dim=8)
    chunk = np.random.RandomState(0).standard_normal(ChunkLayout.from_chunksize((2, 3, 0)).window_samples)
    chunk = chunk.astype(np.float32)
    full = enc(chunk)
    ours = chunk_features(chunk, enc, (2, 3, 0))
    np.testing.assert_array_equal(ours, full[-6:].reshape(3, 2, 8).mean(1))


def test_offline_chunk_starts_keep_float_truncation() -> None:
    """Reference behaviour 13: the chunk for frame 1615 starts one sample early (int(1615*0.04*16000))."""
    starts: list[int] = []
    front = ChunkLayout.from_chunksize((3, 5, 2)).offline_front_pad

    def recorder(chunk: np.ndarray) -> np.ndarray:
        starts.append(int(chunk[0]) - 1 + front)  # audio value k+1 sits at padded index front + k
        return np.zeros(((chunk.shape[0] - 80) // 320, 2), np.float32)

    num_frames = 1625
    audio = np.arange(1, num_frames * 640 + 1, dtype=np.float32)  # exact in float32 below 2**24
    offline_features(audio, recorder)
    assert int(1615 * 0.04 * 16000) == 1615 * 640 - 1
    assert starts[1615 // 5] == 1615 * 640 - 1
    assert starts[1610 // 5] == 1610 * 640


def test_encoder_batch_dim_is_accepted() -> None:
    enc = StubEncoder(seed=1, dim=16)
    chunk = np.linspace(-1, 1, 6480, dtype=np.float32)
    np.testing.assert_array_equal(
        chunk_features(chunk, lambda c: enc(c)[None], (3, 5, 2)), chunk_features(chunk, enc, (3, 5, 2))
    )


@pytest.mark.parametrize("bad", [(3, 5), (3, 0, 2), (-1, 5, 2), (3.0, 5, 2), 5, "352"])
def test_bad_chunksize(bad: object) -> None:
    with pytest.raises(ConfigError, match="chunksize"):
        offline_features(np.zeros(1000, np.float32), StubEncoder(0, 4), bad)  # type: ignore[arg-type]


def test_input_errors() -> None:
    enc = StubEncoder(0, 4)
    with pytest.raises(InputError, match="empty audio"):
        offline_features(np.zeros(0, np.float32), enc)
    with pytest.raises(ConfigError, match="16000 Hz"):
        offline_features(np.zeros(1000, np.float32), enc, sr=44100)
    with pytest.raises(InputError, match="1-D"):
        online_features(np.zeros((2, 1000), np.float32), enc)
    with pytest.raises(InputError, match="encoder gave 3 rows"):
        chunk_features(np.zeros(6480, np.float32), lambda c: np.zeros((3, 4), np.float32))
