"""Build the six networks for a run through the backend layer, and the LMDM window sampler."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ditto_research.backends import make_backend_from_config
from ditto_research.backends.base import NetworkRunner
from ditto_research.config.schema import BackendConfig, ModelConfig, MotionConfig, SamplerConfig
from ditto_research.diffusion.noise import NoiseSource
from ditto_research.diffusion.samplers import WindowSampler, make_window_sampler
from ditto_research.models import NETWORK_NAMES

log = logging.getLogger(__name__)


@dataclass
class Networks:
    """The six networks of one run: backend runners that keep the modules' calling conventions."""

    appearance_extractor: NetworkRunner
    motion_extractor: NetworkRunner
    warp_network: NetworkRunner
    decoder: NetworkRunner
    stitch_network: NetworkRunner
    lmdm: NetworkRunner
    load_s: float = 0.0


def build_networks(model: ModelConfig, motion: MotionConfig, backend: BackendConfig) -> Networks:
    """Load or build every network as ``model`` and ``backend`` say (weights are checked strictly).

    One loading path for every backend, precision and device:
    :func:`ditto_research.backends.make_backend_from_config`.
    """
    t0 = time.perf_counter()
    runners = make_backend_from_config(backend, model, motion).load_all(NETWORK_NAMES)
    log.info("backend=%s precision=%s device=%s", backend.name, backend.precision, backend.device)
    if model.name != "ditto":
        log.warning(
            "model=%s: networks have random weights; the video will not show a talking face", model.name
        )
    return Networks(**runners, load_s=time.perf_counter() - t0)  # type: ignore[arg-type]


def build_window_sampler(lmdm: NetworkRunner, sampler: SamplerConfig, noise: NoiseSource) -> WindowSampler:
    """The LMDM window sampler ``(kp_cond (1, 265), cond (1, S, D)) -> (1, S, 265)`` for ``sampler``, drawing
    from ``noise`` (the run's stream, :mod:`ditto_research.pipeline.randomness`).

    Every LMDM runner has a ``guided_denoiser`` and goes through
    :func:`ditto_research.diffusion.samplers.make_window_sampler` (every sampler; ddim is the reference DDIM
    with the reference's noise draws):

    - PyTorch: the condition memory once per window, the time embeddings once per grid;
    - ONNX / TensorRT with the cached pair (``python -m ditto_research.export.onnx lmdm_form=cached``): the
      memory graph once per window, the step graph once per evaluation; any guidance scale, any time;
    - ONNX / TensorRT with only the official guided step: one whole guided step (condition encoder included)
      per evaluation; its baked guidance weight and integer times only (a ConfigError names the export that
      lifts both).
    """
    window_sampler = make_window_sampler(
        lmdm,
        sampler.name,
        steps=sampler.steps,
        eta=sampler.eta,
        guidance_scale=sampler.guidance_scale,
        generator=noise,
    )
    check = getattr(
        lmdm, "check_sampler", None
    )  # exported LMDMs: refuse what they cannot run before any window
    if check is not None:
        check(sampler.guidance_scale, window_sampler.plan.times)
    return window_sampler
