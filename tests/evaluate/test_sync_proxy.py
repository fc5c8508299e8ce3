"""Weights-free sync proxy: validation controls on synthetic mouth motion, envelope and correlation math."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from ditto_research.errors import InputError
from ditto_research.evaluate.metrics.sync_proxy import (
    audio_rms_envelope,
    lagged_correlations,
    mouth_opening_series,
    sync_proxy_score,
)

SR, FPS, HOP = 16000, 25, 640
VIDEO_LAG = 2  # the synthetic mouth follows the sound 2 frames late


def _speech_like(seed: int, frames: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """(audio (frames * 640,) float32 in [-1, 1], syllable envelope (frames,)): noise gated by bursts."""
    rng = np.random.default_rng(seed)
    bursts = np.convolve(np.clip(rng.standard_normal(frames + 8), 0, None), np.hanning(7), mode="same")[4:-4]
    envelope = bursts / bursts.max()
    carrier = rng.standard_normal(frames * HOP)
    audio = 0.25 * np.repeat(envelope, HOP) * carrier / np.abs(carrier).max()
    return audio.astype(np.float32), envelope


def _render_mouth(envelope: np.ndarray, seed: int = 7) -> np.ndarray:
    """Mouth opening a 'renderer driven by this audio' would give: the envelope, late and a little noisy."""
    rng = np.random.default_rng(seed)
    lagged = np.concatenate([np.full(VIDEO_LAG, envelope[0]), envelope[:-VIDEO_LAG]])
    return 0.05 + 0.3 * lagged + 0.01 * rng.standard_normal(len(envelope))


def _shift_audio(audio: np.ndarray, frames: int) -> np.ndarray:
    """Delay (frames > 0) or advance (frames < 0) the audio, keeping its length."""
    n = abs(frames) * HOP
    pad = np.zeros(n, audio.dtype)
    return np.concatenate([pad, audio[:-n]]) if frames > 0 else np.concatenate([audio[n:], pad])


def test_matched_audio_beats_unrelated_audio() -> None:
    audio_a, envelope_a = _speech_like(seed=1)
    audio_b, _ = _speech_like(seed=2)
    mouth = _render_mouth(envelope_a)
    matched = sync_proxy_score(mouth, audio_a)
    unrelated = sync_proxy_score(mouth, audio_b)
    assert matched.peak_corr > 0.9 and matched.offset == VIDEO_LAG  # positive: the video lags the audio
    assert unrelated.peak_corr < matched.peak_corr - 0.4
    assert matched.offsets.tolist() == list(range(-15, 16)) and matched.correlations.shape == (31,)


@pytest.mark.parametrize("shift", [-9, -4, -1, 3, 7, 12])
def test_shifting_the_audio_moves_the_offset(shift: int) -> None:
    audio, envelope = _speech_like(seed=3)
    mouth = _render_mouth(envelope)
    base = sync_proxy_score(mouth, audio)
    shifted = sync_proxy_score(mouth, _shift_audio(audio, shift))
    # Delaying the audio by k frames makes the video lag it k frames less.
    assert base.offset == VIDEO_LAG and shifted.offset == VIDEO_LAG - shift
    assert shifted.peak_corr > 0.8


def test_int16_and_float_audio_agree() -> None:
    audio, envelope = _speech_like(seed=4)
    mouth = _render_mouth(envelope)
    as_float = sync_proxy_score(mouth, audio)
    as_int = sync_proxy_score(mouth, np.round(audio * 32767).astype(np.int16))
    assert as_int.offset == as_float.offset
    assert as_int.peak_corr == pytest.approx(as_float.peak_corr, abs=1e-3)


def test_rms_envelope_values() -> None:
    tone = np.concatenate([np.full(640, 0.5), np.full(640, -0.25), np.full(100, 1.0)])
    assert audio_rms_envelope(tone, SR, FPS) == pytest.approx([0.5, 0.25, 1.0])  # trailing partial frame
    # 30 fps: 533.33 samples per frame, frame boundaries rounded.
    assert len(audio_rms_envelope(np.ones(16000), SR, 30.0)) == 30
    with pytest.raises(InputError):
        audio_rms_envelope(np.ones((10, 2)), SR, FPS)


def test_lagged_correlations_edge_cases() -> None:
    rng = np.random.default_rng(0)
    series = rng.standard_normal(60)
    offsets, corr = lagged_correlations(series, series, max_offset=5)
    assert offsets.tolist() == list(range(-5, 6)) and corr[5] == pytest.approx(1.0)
    assert np.nanmax(np.abs(np.delete(corr, 5))) < 0.6
    # NaN frames (no face found) are skipped, not propagated.
    holes = series.copy()
    holes[[3, 20, 41]] = np.nan
    assert lagged_correlations(holes, series, max_offset=5)[1][5] == pytest.approx(1.0)
    # A motionless mouth has no correlation: NaN peak and no offset.
    still = sync_proxy_score(np.full(60, 0.2), rng.standard_normal(60 * HOP))
    assert np.isnan(still.peak_corr) and still.offset is None
    # Offsets that leave fewer than min_overlap frames are NaN.
    _, short = lagged_correlations(series[:12], series[:12], max_offset=5, min_overlap=10)
    assert np.isnan(short[0]) and np.isnan(short[-1]) and short[5] == pytest.approx(1.0)


def test_mouth_opening_series_on_a_photo() -> None:
    face = np.ascontiguousarray(data.astronaut()[20:300, 90:370])
    blank = np.full_like(face, 30)
    opening = mouth_opening_series([face, blank, face])
    assert np.isnan(opening[1]) and np.isfinite(opening[[0, 2]]).all()
    # A smiling closed-ish mouth: the inner-lip gap is a small fraction of the eye-corner distance.
    assert 0.0 <= opening[0] < 0.5 and opening[2] == pytest.approx(opening[0], abs=0.02)
    from_bgr = mouth_opening_series(np.stack([face[..., ::-1]]), channel_order="bgr")
    assert from_bgr[0] == pytest.approx(opening[0], abs=0.02)
