"""Build the six networks for a run (official checkpoints, full-size random, or tiny) and the LMDM sampler."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ditto_research.checkpoints import CheckpointRoot
from ditto_research.config.schema import BackendConfig, ModelConfig, MotionConfig, SamplerConfig
from ditto_research.diffusion.ddim import ddim_sample_reference, draw_reference_noises
from ditto_research.diffusion.schedule import ddim_timestep_pairs
from ditto_research.errors import ConfigError
from ditto_research.models import NETWORK_NAMES, load_network

log = logging.getLogger(__name__)


@dataclass
class Networks:
    """The six networks of one run, in eval mode on one device."""

    appearance_extractor: nn.Module
    motion_extractor: nn.Module
    warp_network: nn.Module
    decoder: nn.Module
    stitch_network: nn.Module
    lmdm: nn.Module
    load_s: float = 0.0


def build_networks(
    model: ModelConfig, motion: MotionConfig, device: str | torch.device = "cpu", backend: BackendConfig | None = None
) -> Networks:
    """Load or build every network as ``model`` and ``backend`` say (weights are checked strictly).

    PyTorch fp32 builds the modules directly; other backends / precisions go through
    :func:`ditto_research.backends.make_backend_from_config`, whose runners keep the modules' calling conventions.
    """
    t0 = time.perf_counter()
    if backend is not None and (backend.name != "pytorch" or backend.precision != "fp32"):
        from ditto_research.backends import make_backend_from_config

        runners = make_backend_from_config(backend, model, motion).load_all(NETWORK_NAMES)
        log.info("backend=%s precision=%s device=%s", backend.name, backend.precision, backend.device)
        return Networks(**runners, load_s=time.perf_counter() - t0)  # type: ignore[arg-type]
    nets: dict[str, nn.Module] = {}
    root = CheckpointRoot(Path(model.checkpoint_root))
    for i, name in enumerate(NETWORK_NAMES):
        if model.name == "ditto":
            filename = model.lmdm_file if name == "lmdm" else None
            path = root.model_path(name, filename)
            nets[name] = load_network(
                name, path, device, expected_cond_dim=motion.cond_dim if name == "lmdm" else None
            )
        else:
            extra = {"cond_dim": motion.cond_dim, "seq_frames": motion.seq_frames} if name == "lmdm" else {}
            nets[name] = load_network(name, None, device, seed=model.seed + i, tiny=model.name == "tiny", **extra)
    if model.name != "ditto":
        log.warning("model=%s: networks have random weights; the video will not show a talking face", model.name)
    return Networks(**nets, load_s=time.perf_counter() - t0)


def build_window_sampler(lmdm: nn.Module, sampler: SamplerConfig, seed: int, device: str | torch.device = "cpu"):
    """The LMDM window sampler ``(kp_cond (1, 265), cond (1, S, D)) -> (1, S, 265)`` for ``sampler``.

    Every LMDM runner with a ``guided_denoiser`` goes through
    :func:`ditto_research.diffusion.samplers.make_window_sampler` (every sampler; ddim is the reference DDIM
    with the reference's noise draws):

    - PyTorch: the condition memory once per window, the time embeddings once per grid;
    - ONNX / TensorRT with the cached pair (``python -m ditto_research.export.onnx lmdm_form=cached``): the memory graph once
      per window, the step graph once per evaluation; any guidance scale, any time;
    - ONNX / TensorRT with only the official guided step: one whole guided step (condition encoder included)
      per evaluation; its baked guidance weight and integer times only (a ConfigError names the export that
      lifts both).

    Anything else exposing only ``sampling_fn`` runs the reference DDIM through :class:`ReferenceStepSampler`.
    """
    if hasattr(lmdm, "guided_denoiser"):
        from ditto_research.diffusion.samplers import make_window_sampler

        generator = torch.Generator(device=str(device)).manual_seed(int(seed))
        window_sampler = make_window_sampler(lmdm, sampler.name, steps=sampler.steps, eta=sampler.eta,
                                             guidance_scale=sampler.guidance_scale, generator=generator)
        check = getattr(lmdm, "check_sampler", None)  # exported LMDMs: refuse what they cannot run before any window
        if check is not None:
            check(sampler.guidance_scale, window_sampler.plan.times)
        return window_sampler
    if sampler.name != "ddim":
        raise ConfigError(
            f"sampler={sampler.name} needs an LMDM with guided_denoiser (backend=pytorch, or the cached LMDM pair: "
            "`python -m ditto_research.export.onnx networks=[lmdm] lmdm_form=cached`); use sampler=ddim with this LMDM"
        )
    return ReferenceStepSampler(lmdm, sampler, seed, device)


class ReferenceStepSampler:
    """LMDM window sampler with the reference's noise discipline.

    The per-step noises are drawn once per run (shared by all windows) and x_T once per window, both from one
    explicit generator, so a run is reproducible from its seed. ``(kp_cond (1, 265), cond (1, S, D)) ->
    (1, S, 265)``.
    """

    def __init__(self, lmdm: nn.Module, sampler: SamplerConfig, seed: int, device: str | torch.device = "cpu") -> None:
        self.lmdm = lmdm
        self.sampler = sampler
        self.lmdm.guidance_weight = float(sampler.guidance_scale)
        self.eta = 1.0 if sampler.eta is None else sampler.eta
        self.pairs = ddim_timestep_pairs(sampler.steps)
        self.generator = torch.Generator(device=str(device)).manual_seed(int(seed))
        shape = (1, lmdm.seq_frames, lmdm.motion_dim)
        self.step_noises, self._first_x_T = draw_reference_noises(sampler.steps, shape, self.generator)
        self.shape = shape
        self.windows = 0

    def next_x_T(self) -> torch.Tensor:
        if self.windows == 0:
            return self._first_x_T
        return torch.randn(self.shape, generator=self.generator, device=self.generator.device)

    @torch.no_grad()
    def __call__(self, kp_cond: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x_T = self.next_x_T()
        self.windows += 1
        model_fn = self.lmdm.sampling_fn(kp_cond, cond)
        alphas = self.lmdm.alphas_cumprod
        return ddim_sample_reference(model_fn, x_T, self.pairs, alphas, self.step_noises, eta=self.eta)

