"""backend=onnx reproduces backend=pytorch through the pipeline's chain of networks (model=tiny).

Registration (motion extractor, appearance extractor) -> LMDM DDIM through the pipeline's window sampler ->
driving keypoints -> stitching -> warping -> decoding, every step fed by the same backend, compared at the
end. Stated tolerance (also what the offline pipeline on the bundled example gives with model=tiny): motion
within 1e-4 of max |motion|, frames within 5e-3 (at most one 8-bit level).
"""

from __future__ import annotations

import numpy as np
import torch

from ditto_research.backends import RENDER_NETWORKS, make_backend
from ditto_research.diffusion.samplers import make_window_sampler
from ditto_research.motion.format import MotionInfo, source_motion_vector
from ditto_research.motion.keypoints import transform_keypoint
from tests.helpers import max_rel_err

MOTION_OUTPUTS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


def _render_clip(backend, frames: int = 2, steps: int = 2) -> tuple[np.ndarray, np.ndarray]:
    nets = backend.load_all(RENDER_NETWORKS)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand((1, 3, 256, 256), generator=gen)
    x_s_info = {k: v.numpy() for k, v in zip(MOTION_OUTPUTS, nets["motion_extractor"](image))}
    f_s = nets["appearance_extractor"](image)

    lmdm = nets["lmdm"]
    cond = torch.randn((1, lmdm.seq_frames, lmdm.cond_dim), generator=gen)
    kp_cond = torch.from_numpy(source_motion_vector(x_s_info)[None].astype(np.float32))
    # The pipeline's sampler: step noises, then x_T, from the same generator.
    motion = make_window_sampler(lmdm, "ddim", steps=steps, generator=gen)(kp_cond, cond)

    # Small motion deltas around the source keep the keypoints in range whatever the random weights give.
    info = MotionInfo.from_array(motion[0, :frames].numpy() * 0.01 + source_motion_vector(x_s_info))
    x_s = torch.from_numpy(transform_keypoint(x_s_info).astype(np.float32))
    images = []
    for index in range(frames):
        driving = {**info.frame(index), "kp": x_s_info["kp"]}
        x_d = torch.from_numpy(transform_keypoint(driving).astype(np.float32))
        x_d = nets["stitch_network"](x_s, x_d)
        images.append(nets["decoder"](nets["warp_network"](f_s, x_s, x_d)))
    return motion.numpy(), torch.cat(images).numpy()


def test_onnx_backend_reproduces_pytorch_motion_and_frames(tiny_onnx):
    folder = tiny_onnx(list(RENDER_NETWORKS))
    motion_pt, frames_pt = _render_clip(make_backend("pytorch", model_name="tiny"))
    motion_ox, frames_ox = _render_clip(make_backend("onnx", onnx_dir=folder, model_name="tiny"))
    assert frames_pt.shape == frames_ox.shape and frames_pt.shape[0] == 2
    assert max_rel_err(motion_ox, motion_pt) < 1e-4
    assert max_rel_err(frames_ox, frames_pt) < 5e-3
    # 8-bit frames, as written to the video: at most one level apart
    assert np.abs(np.round(frames_ox * 255) - np.round(frames_pt * 255)).max() <= 1
