"""SyncNet LSE-D / LSE-C: golden parity with syncnet_python's evaluate(), weight loading, face crops."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from skimage import data

from ditto_research.errors import CheckpointError, InputError
from ditto_research.evaluate.metrics.syncnet import (
    SyncNet,
    crop_face_track,
    load_syncnet,
    lse_scores,
    mfcc_features,
    scores_from_embeddings,
    syncnet_embeddings,
)
from tests.helpers import max_rel_err

PREFIXES = ("netcnnaud.", "netfcaud.", "netcnnlip.", "netfclip.")


@pytest.fixture(scope="module")
def golden(load_golden) -> dict[str, np.ndarray]:
    return load_golden("syncnet")


@pytest.fixture(scope="module")
def net(det_init: ModuleType, golden: dict[str, np.ndarray]) -> SyncNet:
    model = SyncNet()
    model.load_state_dict(det_init.fill_state_dict(model, int(golden["seed"])))
    return model.eval()


@pytest.fixture(scope="module")
def embeddings(net: SyncNet, golden: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    torch.set_num_threads(2)
    return syncnet_embeddings(
        golden["frames_bgr"], golden["audio_int16"], net, sample_rate=int(golden["sample_rate"])
    )


def test_state_dict_is_syncnet_v2() -> None:
    state = SyncNet().state_dict()
    assert len(state) == 102 and all(k.startswith(PREFIXES) for k in state)
    assert state["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert state["netcnnaud.18.weight"].shape == (512, 256, 5, 4)
    assert state["netfclip.3.weight"].shape == (1024, 512) and "netfcaud.1.running_var" in state


def test_mfcc_matches_golden(golden: dict[str, np.ndarray]) -> None:
    # python_speech_features' own float64 steps: measured bit-identical, for int16 and float input alike.
    mfcc = mfcc_features(golden["audio_int16"], int(golden["sample_rate"]))
    np.testing.assert_array_equal(mfcc, golden["mfcc"])
    # Floats in [-1, 1] are the same audio as int16 / 32768.
    as_float = golden["audio_int16"].astype(np.float32) / 32768
    np.testing.assert_array_equal(mfcc_features(as_float, int(golden["sample_rate"])), golden["mfcc"])


def test_embeddings_match_golden(embeddings, golden: dict[str, np.ndarray]) -> None:
    # No fp64 yardstick; measured max rel error 2.7e-6 (lip) and 2.7e-6 (audio): 1.5e-5 = 5.5x.
    lip, aud = embeddings
    assert max_rel_err(lip, golden["lip_embeddings"]) <= 1.5e-5
    assert max_rel_err(aud, golden["audio_embeddings"]) <= 1.5e-5


def test_scores_from_golden_embeddings_are_exact(golden: dict[str, np.ndarray]) -> None:
    # From the golden's own embeddings the distances and scores follow torch's ops: measured bit-identical.
    lip, aud = golden["lip_embeddings"], golden["audio_embeddings"]
    scores = scores_from_embeddings(lip, aud, int(golden["vshift"]))
    np.testing.assert_array_equal(scores.dists, golden["dists"])
    np.testing.assert_array_equal(scores.mean_dists, golden["mean_dists"])
    assert scores.lse_d == float(golden["lse_d"])
    assert scores.lse_c == float(golden["lse_c"])
    assert scores.av_offset == int(golden["av_offset"])


def test_lse_scores_match_golden(net: SyncNet, golden: dict[str, np.ndarray]) -> None:
    scores = lse_scores(
        golden["frames_bgr"],
        golden["audio_int16"],
        net,
        vshift=int(golden["vshift"]),
        sample_rate=int(golden["sample_rate"]),
    )
    # The embeddings' float32 noise (above) carried into distances of ~1e3. Measured max rel error 6.7e-7
    # (dists) and 3.4e-7 (mean_dists): 4e-6 / 2e-6 = 6x. LSE-D and LSE-C: measured 1 float32 ulp at
    # max |mean_dists| (6.1e-5 at 722); 4 ulps allowed.
    ulp = float(np.spacing(np.abs(golden["mean_dists"]).max().astype(np.float32)))
    assert max_rel_err(scores.dists, golden["dists"]) <= 4e-6
    assert max_rel_err(scores.mean_dists, golden["mean_dists"]) <= 2e-6
    assert abs(scores.lse_d - float(golden["lse_d"])) <= 4 * ulp
    assert abs(scores.lse_c - float(golden["lse_c"])) <= 4 * ulp
    assert scores.av_offset == int(golden["av_offset"])
    assert scores.dists.shape == (len(golden["frames_bgr"]) - 5, 2 * int(golden["vshift"]) + 1)


def test_batch_size_does_not_change_embeddings(
    net: SyncNet, embeddings: tuple[np.ndarray, np.ndarray], golden: dict[str, np.ndarray]
) -> None:
    frames, audio = golden["frames_bgr"][:12], golden["audio_int16"][: 12 * 640]
    frames = np.ascontiguousarray(frames[..., ::-1])[..., ::-1]  # same values, a negative-stride view
    lip, aud = syncnet_embeddings(frames, audio, net, batch=3, sample_rate=int(golden["sample_rate"]))
    assert lip.shape == aud.shape == (7, 1024)
    assert max_rel_err(lip, embeddings[0][:7]) < 1e-5 and max_rel_err(aud, embeddings[1][:7]) < 1e-5


@pytest.mark.parametrize("lag", [-4, 0, 3])
def test_offset_sign_follows_audio_shift(lag: int) -> None:
    """Lip row i matching audio row i - lag (video lags audio by ``lag`` frames) gives av_offset = lag."""
    rng = np.random.default_rng(0)
    lip = rng.standard_normal((40, 16)).astype(np.float32)
    aud = np.roll(lip, -lag, axis=0)  # aud[i - lag] = lip[i]
    scores = scores_from_embeddings(lip, aud, vshift=6)
    assert scores.av_offset == lag and scores.lse_c > 1.0
    assert scores.mean_dists.shape == (13,) and scores.lse_d == pytest.approx(scores.mean_dists.min())


def test_bad_inputs(net: SyncNet, golden: dict[str, np.ndarray]) -> None:
    frames, audio = golden["frames_bgr"], golden["audio_int16"]
    with pytest.raises(InputError, match="224"):
        lse_scores(frames[:, :200], audio, net)
    with pytest.raises(InputError, match="at least 6 frames"):
        lse_scores(frames[:5], audio, net)
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        lse_scores(frames, audio.astype(np.float32), net)
    with pytest.raises(InputError, match="mono"):
        lse_scores(frames, np.stack([audio, audio], 1), net)


# ---- weight files --------------------------------------------------------------------------------------


def test_load_syncnet_round_trip(tmp_path: Path, net: SyncNet) -> None:
    path = tmp_path / "syncnet_v2.model"
    torch.save(net.state_dict(), path)
    loaded = load_syncnet(path)
    assert not loaded.training
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("content", ["text", "wrong_keys", "wrong_shape", "not_tensors", "missing"])
def test_load_syncnet_rejects_wrong_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "weights.model"
    state = SyncNet().state_dict()
    if content == "text":
        path.write_text("this is not a checkpoint\n")
    elif content == "wrong_keys":
        torch.save({"module." + k: v for k, v in state.items()}, path)
    elif content == "wrong_shape":
        state["netfclip.3.weight"] = torch.zeros(512, 512)
        torch.save(state, path)
    elif content == "not_tensors":
        torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="weights.model") as info:
        load_syncnet(path)
    assert "\n" not in str(info.value)


# ---- face crops ----------------------------------------------------------------------------------------


def test_crop_face_track_centres_the_face() -> None:
    face = np.ascontiguousarray(data.astronaut()[20:300, 90:370])
    blank = np.full_like(face, 30)
    crops = crop_face_track(np.stack([face, blank, face]))
    assert crops.shape == (3, 224, 224, 3) and crops.dtype == np.uint8
    # The faceless middle frame is cropped with the box interpolated from its neighbours: a crop of the
    # blank frame (uniform), while the two identical face frames give identical crops.
    assert np.array_equal(crops[0], crops[2]) and crops[0].std() > 30
    assert int(crops[1].max()) - int(crops[1].min()) <= 110 - 30  # blank (30) and at most grey padding (110)
    # Output is BGR: the crop of the BGR input equals the crop of the RGB input.
    crops_bgr = crop_face_track(np.stack([face[..., ::-1]] * 2), channel_order="bgr")
    assert np.abs(crops_bgr[0].astype(int) - crops[0].astype(int)).max() <= 1
    from ditto_research.face.mediapipe_frontend import MediaPipeFrontend

    with MediaPipeFrontend() as mesh:
        found = mesh.locate(np.ascontiguousarray(crops[0][..., ::-1]), what="crop")
    # syncnet_python's window runs from s above the box centre to 1.8 s below it (s = half the box size):
    # the box centre lands at 224 / 2.8 = 80 px, the face spans about 2 s / 2.8 s of the crop's height.
    eyes_y, mouth_y = found.points[0:8, 1].mean(), found.points[8:10, 1].mean()
    centre_x = (found.box[0] + found.box[2]) / 2
    assert 30 < eyes_y < 80 < mouth_y < 140 and 100 < found.size < 200 and abs(centre_x - 112) < 20


def test_crop_face_track_without_any_face() -> None:
    with pytest.raises(InputError, match="no face"):
        crop_face_track(np.full((2, 64, 64, 3), 30, np.uint8))
