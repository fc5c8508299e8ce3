"""Audio-to-motion windowing: golden replay (sampler outputs injected), full LMDM run, and edge cases.

The edge cases compare against ``_LoopOracle``, a deliberately plain per-frame transcription of the reference
behaviours (golden README 8-10), so a vectorisation slip in the package shows up as a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from ditto_research.diffusion.samplers import make_plan, solve_window
from ditto_research.errors import ConfigError, InputError
from ditto_research.models.lmdm import LMDM
from ditto_research.motion.audio2motion import (
    Audio2MotionSettings,
    MotionWindowState,
    fuse_window,
    generate_motion,
    generate_motion_offline,
    pad_window,
    smooth_motion_,
    window_starts,
)
from ditto_research.motion.format import MotionInfo, source_motion_vector
from tests.helpers import max_abs_err

KEYS = ("scale", "pitch", "yaw", "roll", "t", "exp")


# ---- helpers ------------------------------------------------------------------------------------------


def _golden_settings(g: dict[str, np.ndarray]) -> Audio2MotionSettings:
    return Audio2MotionSettings(
        seq_frames=g["chunk_pred_kp_seq"].shape[2],
        overlap_v2=int(g["overlap_v2"]),
        fix_kp_cond=int(g["fix_kp_cond"]),
        smo_k_d=int(g["smo_k_d"]),
    )


def _golden_source(g: dict[str, np.ndarray]) -> np.ndarray:
    return source_motion_vector({k: g[f"x_s_{k}"] for k in (*KEYS, "kp")})


def _check_outputs(g: dict[str, np.ndarray], motion: np.ndarray, tol: float) -> dict[str, float]:
    """Assert res_kp_seq and every x_d_* within ``tol`` (max abs; 0 = bit-identical); returns the max
    errors."""
    errors = {"res_kp_seq": max_abs_err(motion[None], g["res_kp_seq"])}
    frames = MotionInfo.from_array(motion).to_frame_dicts()
    for key in KEYS:
        errors[f"x_d_{key}"] = max_abs_err(np.stack([f[key] for f in frames]), g[f"x_d_{key}"])
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"max errors above {tol:.3g}: {bad}"
    return errors


@dataclass
class _StubSampler:
    """Deterministic stand-in for the LMDM that records its inputs."""

    seq_frames: int = 80
    cond_dim: int = 6
    calls: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(7)
        self.weight = rng.standard_normal((self.cond_dim, 265)).astype(np.float32)
        self.ramp = np.linspace(0, 1, self.seq_frames, dtype=np.float32)[:, None]

    def __call__(self, kp_cond: torch.Tensor, aud_cond: torch.Tensor) -> torch.Tensor:
        assert kp_cond.shape == (1, 265) and aud_cond.shape == (1, self.seq_frames, self.cond_dim)
        kp, aud = kp_cond.numpy().copy(), aud_cond.numpy().copy()
        self.calls.append((kp, aud))
        return torch.from_numpy((np.tanh(aud[0] @ self.weight) + 0.5 * kp + self.ramp)[None])


class _LoopOracle:
    """Plain per-frame version of the reference offline loop (test-only yardstick)."""

    def __init__(self, settings: Audio2MotionSettings, source: np.ndarray) -> None:
        self.s, self.source = settings, source.astype(np.float32)

    def smooth(self, seq: np.ndarray, start: int, stop: int) -> None:
        half = self.s.smo_k_d // 2
        if self.s.smo_k_d <= 1:
            return
        before = seq.copy()
        for i in range(start, stop):
            lo, hi = max(0, i - half), min(len(seq), i + half + 1)
            seq[i, :202] = np.mean(before[lo:hi, :202], axis=0)

    def run(self, conds: np.ndarray, sampler: _StubSampler) -> tuple[np.ndarray, list[np.ndarray]]:
        s, n = self.s, len(conds)
        fuse = s.fuse_length
        kp_cond, seq, kp_conds, clip_idx = self.source.copy(), None, [], 0
        for start in range(0, n, s.valid_clip_len):
            window = conds[start : start + s.seq_frames]
            window = np.concatenate([window, np.repeat(window[-1:], s.seq_frames - len(window), 0)])
            kp_conds.append(kp_cond.copy())
            pred = sampler(torch.from_numpy(kp_cond[None]), torch.from_numpy(window[None]))[0].numpy()
            if seq is None:
                seq = pred.copy()
                self.smooth(seq, 0, len(seq))
            else:
                old = len(seq)
                for j in range(fuse):
                    a = np.float32(j / fuse)
                    seq[old - fuse + j] = seq[old - fuse + j] * (1 - a) + pred[s.overlap_v2 - fuse + j] * a
                seq = np.concatenate([seq, pred[s.overlap_v2 :]])
                self.smooth(seq, old - fuse, old + 1)
            clip_idx += 1
            kp_cond = seq[len(seq) - s.overlap_v2 - 1].copy()
            if s.fix_kp_cond > 0 and clip_idx % s.fix_kp_cond == 0:
                chained, kp_cond = kp_cond, self.source.copy()
                if s.fix_kp_cond_dim is not None:
                    a, b = s.fix_kp_cond_dim
                    kp_cond[a:b] = chained[a:b]
        seq = seq[:n].copy()
        self.smooth(seq, 0, n)
        return seq, kp_conds


def _compare_with_oracle(
    settings: Audio2MotionSettings, n: int, seed: int = 0
) -> tuple[_StubSampler, np.ndarray]:
    """Run ours and the oracle on random conditions; returns our sampler (with its calls) and the source."""
    rng = np.random.default_rng(seed)
    conds = rng.standard_normal((n, 6)).astype(np.float32)
    source = rng.standard_normal(265).astype(np.float32)
    ours_sampler, ref_sampler = _StubSampler(settings.seq_frames), _StubSampler(settings.seq_frames)
    motion = generate_motion_offline(conds, ours_sampler, source, settings)
    ref_motion, ref_kp_conds = _LoopOracle(settings, source).run(conds, ref_sampler)
    assert motion.shape == (n, 265) and motion.dtype == np.float32
    assert len(ours_sampler.calls) == len(ref_kp_conds) == len(window_starts(n, settings))
    for (kp, aud), ref_kp, (_, ref_aud) in zip(ours_sampler.calls, ref_kp_conds, ref_sampler.calls):
        np.testing.assert_allclose(kp[0], ref_kp, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(aud, ref_aud)
    np.testing.assert_allclose(motion, ref_motion, rtol=0, atol=1e-5)
    return ours_sampler, source


# ---- golden -------------------------------------------------------------------------------------------


def test_golden_replay_isolates_windowing(load_golden) -> None:
    """Sampler outputs come from the golden; every kp_cond we hand it must be the reference's."""
    g = load_golden("audio2motion_offline")
    calls: list[int] = []

    def replay(kp_cond: torch.Tensor, aud_cond: torch.Tensor) -> torch.Tensor:
        i = len(calls)
        calls.append(i)
        start = i * (g["chunk_pred_kp_seq"].shape[2] - int(g["overlap_v2"]))
        expected_aud = g["aud_cond_all"][start : start + aud_cond.shape[1]]
        got, n_real = aud_cond[0].numpy(), len(expected_aud)
        np.testing.assert_array_equal(got[:n_real], expected_aud)
        np.testing.assert_array_equal(got[n_real:], np.broadcast_to(expected_aud[-1], got[n_real:].shape))
        np.testing.assert_array_equal(kp_cond.numpy(), g["chunk_kp_cond"][i], err_msg=f"kp_cond of chunk {i}")
        return torch.from_numpy(g["chunk_pred_kp_seq"][i])

    motion = generate_motion_offline(g["aud_cond_all"], replay, _golden_source(g), _golden_settings(g))
    assert len(calls) == int(g["n_chunks"])
    # Fuse, smooth and cut in the reference's float32 order: measured bit-identical (every kp_cond too).
    _check_outputs(g, motion, tol=0.0)


@pytest.mark.slow
def test_golden_full_lmdm_ddim(load_golden, det_init) -> None:
    """Real LMDM + the pipeline's DDIM (make_plan + solve_window) with the golden noise draws."""
    g = load_golden("audio2motion_offline")
    steps = int(g["sampling_timesteps"])
    _, _, frames, motion_dim = g["chunk_pred_kp_seq"].shape
    model = LMDM(motion_dim=motion_dim, cond_dim=g["aud_cond_all"].shape[1], seq_frames=frames).eval()
    model.load_state_dict(det_init.fill_state_dict(model, int(g["seed"]), skip=("rotary.freqs",)))
    draws = torch.from_numpy(g["randn_draws"])
    plan = make_plan(model, "ddim", steps, step_noises=draws[: steps - 1])  # shared by every window
    x_ts = draws[steps - 1 :]  # one per window, in window order
    kp_conds: list[np.ndarray] = []
    windows: list[np.ndarray] = []

    def sample_window(kp_cond: torch.Tensor, aud_cond: torch.Tensor) -> torch.Tensor:
        i = len(kp_conds)
        kp_conds.append(kp_cond.numpy().copy())
        out = solve_window(model, plan, kp_cond, aud_cond, x_ts[i], guidance_scale=model.guidance_weight)
        windows.append(out.numpy().copy())
        return out

    motion = generate_motion_offline(g["aud_cond_all"], sample_window, _golden_source(g), _golden_settings(g))
    assert len(kp_conds) == int(g["n_chunks"])
    # No fp64 yardstick for the chained windows (one 50-step window: 3.5e-5, lmdm_ddim_sample_s50). Measured
    # max abs error 9.5e-5 (the last window; it grows along the kp_cond chain) on |motion| <= 45: 4e-4 = 4.2x.
    tol = 4e-4
    kp_errors = [max_abs_err(kp, g["chunk_kp_cond"][i]) for i, kp in enumerate(kp_conds)]
    window_errors = [max_abs_err(w, g["chunk_pred_kp_seq"][i]) for i, w in enumerate(windows)]
    assert max(kp_errors) <= tol, f"kp_cond max errors {kp_errors} > {tol:.3g}"
    assert max(window_errors) <= tol, f"chunk_pred_kp_seq max errors {window_errors} > {tol:.3g}"
    _check_outputs(g, motion, tol)


# ---- edge cases against the loop oracle ---------------------------------------------------------------


def test_shorter_than_one_window() -> None:
    sampler, _ = _compare_with_oracle(Audio2MotionSettings(), n=37)
    _, aud = sampler.calls[0]
    np.testing.assert_array_equal(aud[0, 37:], np.broadcast_to(aud[0, 36], (43, 6)))


def test_single_frame() -> None:
    _compare_with_oracle(Audio2MotionSettings(), n=1)


def test_exact_multiple_of_stride() -> None:
    sampler, _ = _compare_with_oracle(Audio2MotionSettings(overlap_v2=10), n=140)
    assert len(sampler.calls) == 2


@pytest.mark.parametrize(
    "n, overlap, smo_k_d",
    [(n, o, k) for n in (150, 151, 203) for o, k in ((10, 3), (25, 4), (50, 5))]
    + [(95, 79, 3), (300, 1, 13)],
)
def test_general_sizes(n: int, overlap: int, smo_k_d: int) -> None:
    _compare_with_oracle(Audio2MotionSettings(overlap_v2=overlap, smo_k_d=smo_k_d), n=n, seed=n)


def test_overlap_zero_concatenates_windows() -> None:
    settings = Audio2MotionSettings(overlap_v2=0, smo_k_d=1)
    sampler, _ = _compare_with_oracle(settings, n=200)
    assert len(sampler.calls) == 3
    # without smoothing the output is the windows laid end to end, each chained from the last frame
    conds = np.random.default_rng(0).standard_normal((200, 6)).astype(np.float32)
    fresh = _StubSampler()
    motion = generate_motion_offline(conds, fresh, np.zeros(265, np.float32), settings)
    np.testing.assert_array_equal(fresh.calls[1][0][0], motion[79])
    np.testing.assert_array_equal(fresh.calls[2][0][0], motion[159])
    second_window = fresh(torch.from_numpy(motion[79][None]), torch.from_numpy(conds[80:160][None]))[0]
    np.testing.assert_array_equal(motion[80:160], second_window.numpy())
    _compare_with_oracle(Audio2MotionSettings(overlap_v2=0, smo_k_d=3), n=200)


@pytest.mark.parametrize("fix_kp_cond_dim", [None, (0, 202)])
def test_fix_kp_cond_resets(fix_kp_cond_dim: tuple[int, int] | None) -> None:
    settings = Audio2MotionSettings(fix_kp_cond=2, fix_kp_cond_dim=fix_kp_cond_dim)
    n = 5 * settings.valid_clip_len
    sampler, source_motion = _compare_with_oracle(settings, n=n, seed=3)
    kp_conds = [kp[0] for kp, _ in sampler.calls]
    assert len(kp_conds) == 5
    for i in (0, 2, 4):  # windows after every 2nd one start again from the source motion
        if fix_kp_cond_dim is None or i == 0:
            np.testing.assert_array_equal(kp_conds[i], source_motion)
        else:
            np.testing.assert_array_equal(kp_conds[i][202:], source_motion[202:])
            assert not np.array_equal(kp_conds[i][:202], source_motion[:202])
    for i in (1, 3):
        assert not np.array_equal(kp_conds[i], source_motion)


def test_online_fuse_length_and_window() -> None:
    settings = Audio2MotionSettings(overlap_v2=50, fuse_mode="online")
    assert settings.fuse_length == 30 and settings.valid_clip_len == 30
    assert Audio2MotionSettings(overlap_v2=10, fuse_mode="online").fuse_length == 10
    _compare_with_oracle(settings, n=170, seed=5)
    rng = np.random.default_rng(1)
    motion = rng.standard_normal((80, 265)).astype(np.float32)
    window = rng.standard_normal((80, 265)).astype(np.float32)
    fused = fuse_window(motion.copy(), window, settings)
    assert fused.shape == (110, 265)
    np.testing.assert_array_equal(fused[:50], motion[:50])
    np.testing.assert_array_equal(fused[50], motion[50])  # weight on the new window starts at 0
    np.testing.assert_allclose(fused[79], motion[79] * (1 / 30) + window[49] * (29 / 30), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(fused[80:], window[50:])


# ---- small steps -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [0, 1, 2, 3, 4, 7])
def test_smooth_matches_loop(kernel: int) -> None:
    seq = np.random.default_rng(kernel).standard_normal((30, 265)).astype(np.float32)
    ref = seq.copy()
    _LoopOracle(Audio2MotionSettings(smo_k_d=kernel), np.zeros(265)).smooth(ref, 3, 29)
    ours = smooth_motion_(seq.copy(), 3, 29, kernel)
    np.testing.assert_array_equal(ours, ref)  # same summation order -> bit-identical
    np.testing.assert_array_equal(ours[:, 202:], seq[:, 202:])  # exp is never smoothed
    if kernel > 1:
        assert not np.array_equal(ours[:, :202], seq[:, :202])


def test_pad_window_and_starts() -> None:
    rows = torch.arange(12.0).reshape(4, 3)
    padded = pad_window(rows, 7)
    assert padded.shape == (7, 3)
    assert torch.equal(padded[4:], rows[-1:].expand(3, 3))
    assert pad_window(rows, 4) is rows
    assert list(window_starts(200, Audio2MotionSettings(overlap_v2=10))) == [0, 70, 140]


def test_keep_last_bounds_memory() -> None:
    state = MotionWindowState(np.zeros(265, np.float32), Audio2MotionSettings())
    assert state.keep_last(160) == 0
    window = np.ones((80, 265), np.float32)
    for _ in range(4):
        state.add_window(window)
    assert state.motion is not None and state.motion.shape == (290, 265)
    assert state.keep_last(160) == 130 and state.motion.shape == (160, 265)


def test_cond_callable_path_matches_array_path() -> None:
    conds = np.random.default_rng(2).standard_normal((120, 6)).astype(np.float32)
    source = np.zeros(265, np.float32)
    settings = Audio2MotionSettings()
    by_array = generate_motion_offline(conds, _StubSampler(), source, settings)
    padded = torch.from_numpy(np.concatenate([conds, np.repeat(conds[-1:], 80, 0)]))
    by_callable = generate_motion(120, lambda s: padded[s : s + 80], _StubSampler(), source, settings)
    np.testing.assert_array_equal(by_array, by_callable)


# ---- bad parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"overlap_v2": 80},
        {"overlap_v2": 100},
        {"overlap_v2": -1},
        {"seq_frames": 0},
        {"fix_kp_cond": -1},
        {"fix_kp_cond_dim": (10, 5)},
        {"fix_kp_cond_dim": (0, 300)},
        {"smo_k_d": -3},
        {"fuse_mode": "causal"},
    ],
)
def test_bad_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Audio2MotionSettings(**kwargs)


def test_bad_inputs_raise() -> None:
    settings = Audio2MotionSettings()
    source = np.zeros(265, np.float32)
    with pytest.raises(InputError):
        generate_motion_offline(np.zeros((0, 6), np.float32), _StubSampler(), source, settings)
    with pytest.raises(InputError):
        generate_motion_offline(np.zeros((10, 6), np.float32), _StubSampler(), np.zeros(264), settings)
    with pytest.raises(InputError):
        generate_motion_offline(np.zeros((10,), np.float32), _StubSampler(), source, settings)
    with pytest.raises(ConfigError):  # sampler built for other windows than the settings say
        generate_motion_offline(
            np.zeros((10, 6), np.float32), lambda kp, aud: torch.zeros(1, 64, 265), source, settings
        )
    with pytest.raises(InputError):
        generate_motion(10, lambda s: torch.zeros(40, 6), _StubSampler(), source, settings)
