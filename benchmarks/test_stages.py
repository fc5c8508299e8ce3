"""Each pipeline stage on its own (one call), plus the evaluation metrics: where a frame's time goes."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_research.audio.features import offline_features
from ditto_research.media.writer import VideoWriter
from ditto_research.motion.format import MotionInfo
from ditto_research.pipeline.controls import build_frame_controls, build_stitcher
from ditto_research.pipeline.stages import (
    DecodeStage,
    FrameMotion,
    PasteStage,
    StitchStage,
    WarpStage,
)

FRAMES = 25


def one(items):
    """The single output of a stage's ``process``."""
    (item,) = list(items)
    return item


@pytest.fixture(scope="module")
def chain(bench):
    """Stage objects wired as the offline pipeline wires them, and one item for each to process."""
    session, source = bench.session, bench.source
    nets = session.networks
    motion = session.generate_motion(bench.audio, source)
    stitch = StitchStage(
        build_stitcher(session.cfg.control, nets.stitch_network, source, len(motion)),
        source,
        build_frame_controls(session.cfg.control, len(motion)),
    )
    warp, decode, paste = WarpStage(nets.warp_network, source), DecodeStage(nets.decoder), PasteStage(source)
    motion_item = FrameMotion(0, MotionInfo.from_array(motion).frame(0))
    keypoints = one(stitch.process(motion_item))
    feature = one(warp.process(keypoints))
    render = one(decode.process(feature))
    image = one(paste.process(render)).image
    return {
        "stitch": (stitch, motion_item),
        "warp": (warp, keypoints),
        "decode": (decode, feature),
        "paste": (paste, render),
        "image": image,
    }


def test_registration(run, bench):
    from ditto_research.examples import example_source

    def register():
        registered = bench.session.register(example_source())
        registered.media.close()
        return registered

    assert len(run(register)) == 1


def test_audio_features_2s(run, bench):
    feats = run(offline_features, bench.audio, bench.session.encoder, (3, 5, 2))
    assert feats.shape[0] >= 50


def test_motion_2s(run, bench):
    """HuBERT windows, conditions, LMDM windows at --bench-steps, fuse and smoothing for 2 s of speech."""
    assert run(bench.session.generate_motion, bench.audio, bench.source).shape == (50, 265)


@pytest.mark.parametrize("stage", ["stitch", "warp", "decode", "paste"])
def test_render_stage(run, chain, stage):
    obj, item = chain[stage]
    assert run(lambda: one(obj.process(item))) is not None


def test_writer_25_frames(run, chain, media_dir):
    image = chain["image"]

    def encode():
        with VideoWriter(media_dir / "bench.mp4", fps=25, overwrite=True) as writer:
            for _ in range(FRAMES):
                writer.write(image)
            return writer.close()

    assert run(encode).is_file()


def test_sync_proxy_25_frames(run, bench):
    """MediaPipe mouth opening on 25 frames of the source portrait (the weights-free lip-sync proxy)."""
    import cv2

    from ditto_research.evaluate.metrics.sync_proxy import mouth_opening_series
    from ditto_research.examples import example_source

    frame = cv2.cvtColor(cv2.imread(str(example_source())), cv2.COLOR_BGR2RGB)
    assert np.isfinite(run(mouth_opening_series, [frame] * FRAMES)).all()


def test_syncnet_25_frames(run, bench):
    """LSE-D / LSE-C of 25 face crops with a randomly initialised SyncNet (weights do not change the cost)."""
    import torch

    from ditto_research.evaluate.metrics.syncnet import SyncNet, lse_scores

    torch.manual_seed(0)
    net = SyncNet().eval()
    crops = np.random.default_rng(0).integers(0, 255, (FRAMES, 224, 224, 3), dtype=np.uint8)
    audio = bench.audio[: FRAMES * 640]
    assert np.isfinite(run(lse_scores, crops, audio, net).lse_d)
