"""The LightningModule of the motion model: the released objective, and what the released trainer lacks.

- ``training_step``: :class:`~ditto_research.train.objective.Objective` on a batch of
  :class:`~ditto_research.train.data.WindowStream` samples, with the sample's own draws (t, noise, keep), so
  the loss of a sample does not depend on which process or batch it lands in; dropout's random state is
  seeded per (seed, step, micro-batch, rank), so a resumed run repeats the uninterrupted one.
- the optimiser (AdamW or Adan) with a per-step warmup + cosine / constant schedule; gradient clipping and
  accumulation are the Trainer's; the gradient's global norm is logged before clipping.
- EMA weights (``torch.optim.swa_utils.AveragedModel`` with an EMA average, in the checkpoint), updated right
  after every optimizer step, validated and exported when on.
- validation (:meth:`validate_now`): the held-out loss on a fixed grid of diffusion times (same windows,
  times, noise every time), and sampled windows (the configured sampler) against the real motion: per-part
  errors, jitter, mouth-audio correlation (:mod:`ditto_research.train.metrics`).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ditto_research.config.schema import SamplerConfig
from ditto_research.models.lmdm import LMDM
from ditto_research.train.config import TrainOptions
from ditto_research.train.metrics import jitter, mouth_audio_correlation, part_errors
from ditto_research.train.objective import DEFAULT_PARTS, Objective
from ditto_research.train.optim import Adan, make_scheduler

__all__ = ["CONDITION_ENCODER", "LmdmTraining"]

# The condition encoder: what turns audio / emotion / eyes / keypoints into the transformer's memory, and the
# null embeddings that stand for a dropped condition (train.freeze_condition_encoder keeps them fixed).
CONDITION_ENCODER = (
    "cond_projection.",
    "cond_encoder.",
    "non_attn_cond_projection.",
    "null_cond_embed",
    "null_cond_hidden",
)


def _seed_of(*parts: int) -> int:
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class LmdmTraining(L.LightningModule):
    """Trains ``lmdm`` with ``options`` (``train.*``); ``val_items``: fixed held-out windows (their
    ``audio_rms`` rows ride along when the dataset has them); ``sampler``: how validation samples."""

    def __init__(
        self,
        lmdm: LMDM,
        options: TrainOptions,
        sampler: SamplerConfig,
        val_items: Sequence[dict[str, np.ndarray]] = (),
    ) -> None:
        super().__init__()
        self.lmdm = lmdm
        self.options = options
        self.sampler_config = sampler
        self.val_items = list(val_items)
        self.objective = Objective(
            options.cond_drop_prob,
            DEFAULT_PARTS,
            use_last_frame_loss=options.last_frame_loss,
            use_reg_loss=options.reg_loss,
        )
        if options.freeze_condition_encoder:
            for name, parameter in lmdm.named_parameters():
                if name.startswith(CONDITION_ENCODER):
                    parameter.requires_grad_(False)
        self.ema = (
            AveragedModel(lmdm, multi_avg_fn=get_ema_multi_avg_fn(options.ema_decay), use_buffers=True)
            if options.ema_decay is not None
            else None
        )
        self.last_validation: dict[str, float] = {}

    # ---- training ------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        micro = batch_idx % self.options.accumulate  # batch_idx restarts on resume; the step does not
        torch.manual_seed(_seed_of(self.options.seed, self.global_step, micro, self.global_rank))
        loss = self.objective(
            self.lmdm,
            batch["kp_seq"],
            batch["kp_cond"],
            batch["aud_cond"],
            t=batch["t"],
            noise=batch["noise"],
            keep_mask=batch["keep"],
        )
        size = batch["kp_seq"].shape[0]
        self.log("train/loss", loss.total, prog_bar=True, batch_size=size, sync_dist=True)
        for name, value in loss.terms.items():
            self.log(f"train/{name}", value, batch_size=size, sync_dist=True)
        return loss.total

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad.detach().norm(2) for p in self.lmdm.parameters() if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.stack(grads).norm(2), batch_size=1)
        self.log("train/lr", optimizer.param_groups[0]["lr"], batch_size=1)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Right after the step, before any callback (a checkpoint saved at this step holds this EMA).
        if self.ema is not None:
            self.ema.update_parameters(self.lmdm)

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.options
        parameters = [p for p in self.lmdm.parameters() if p.requires_grad]
        if o.optimizer == "adan":
            kwargs = {"betas": tuple(o.betas)} if o.betas else {}
            optimizer: torch.optim.Optimizer = Adan(
                parameters, lr=o.lr, weight_decay=o.weight_decay, **kwargs
            )
        else:
            kwargs = {"betas": tuple(o.betas)} if o.betas else {}
            optimizer = torch.optim.AdamW(parameters, lr=o.lr, weight_decay=o.weight_decay, **kwargs)
        warmup = min(o.warmup_steps, o.max_steps)
        scheduler = make_scheduler(optimizer, o.schedule, warmup, o.max_steps, o.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- the weights people use ----------------------------------------------------------------------

    def weights(self, ema: bool | None = None) -> LMDM:
        """The LMDM whose weights validation measures and export writes: the EMA copy when EMA is on (and
        ``ema`` is not False), else the trained module."""
        use_ema = self.ema is not None and (self.options.export_ema if ema is None else ema)
        return self.ema.module if use_ema else self.lmdm  # type: ignore[union-attr,return-value]

    # ---- validation ----------------------------------------------------------------------------------

    @torch.no_grad()
    def validate_now(self) -> dict[str, float]:
        """Every validation measure of the current weights (:meth:`weights`) on the fixed held-out windows."""
        if not self.val_items:
            return {}
        model = self.weights()
        was_training = model.training
        model.eval()
        try:
            metrics = self._held_out_loss(model)
            metrics.update(self._sampled(model))
        finally:
            model.train(was_training)
        self.last_validation = metrics
        return metrics

    def _held_out_loss(self, model: LMDM) -> dict[str, float]:
        o = self.options
        steps = model.alphas_cumprod.shape[0]
        grid = np.unique(np.linspace(0, steps - 1, o.val_t_grid).round().astype(np.int64))
        device = model.alphas_cumprod.device
        sums: dict[str, float] = defaultdict(float)
        count = 0
        for i, item in enumerate(self.val_items):
            x0 = torch.from_numpy(np.array(item["kp_seq"]))[None].to(device)
            cond_frame = torch.from_numpy(np.array(item["kp_cond"]))[None].to(device)
            cond = torch.from_numpy(item["aud_cond"])[None].to(device)
            for t in grid:
                rng = np.random.default_rng([o.seed, 4, i, int(t)])
                noise = torch.from_numpy(rng.standard_normal(x0.shape, dtype=np.float32)).to(device)
                loss = self.objective(
                    model,
                    x0,
                    cond_frame,
                    cond,
                    t=torch.tensor([int(t)], device=device),
                    noise=noise,
                    keep_mask=torch.ones(1, dtype=torch.bool, device=device),
                )
                sums["val/loss"] += float(loss.total)
                for name, value in loss.terms.items():
                    if name.endswith("_P"):
                        sums[f"val/{name}"] += float(value)
                count += 1
        return {k: v / count for k, v in sums.items()}

    def _sampled(self, model: LMDM) -> dict[str, float]:
        from ditto_research.backends.pytorch import TorchLmdm
        from ditto_research.diffusion.noise import TorchNoise
        from ditto_research.diffusion.samplers import make_window_sampler

        o, s = self.options, self.sampler_config
        items = self.val_items[: o.val_sample_windows]
        if not items:
            return {}
        device = model.alphas_cumprod.device
        runner = TorchLmdm("lmdm", model, device)
        generator = torch.Generator(device=device).manual_seed(_seed_of(o.seed, 5))
        window_sampler = make_window_sampler(
            runner,
            s.name,
            steps=s.steps,
            eta=getattr(s, "eta", None),
            guidance_scale=s.guidance_scale,
            generator=TorchNoise(generator),
        )
        errors: dict[str, list[float]] = defaultdict(list)
        for item in items:
            kp_cond = torch.from_numpy(np.array(item["kp_cond"]))[None].to(device)
            cond = torch.from_numpy(item["aud_cond"])[None].to(device)
            sampled = window_sampler(kp_cond, cond)[0].float().cpu().numpy()
            real = np.asarray(item["kp_seq"])
            for key, value in part_errors(sampled, real).items():
                errors[f"val/sample_{key}"].append(value)
            errors["val/jitter_ratio"].append(jitter(sampled) / max(jitter(real), 1e-12))
            if "audio_rms" in item:
                for name, motion in (("sample", sampled), ("real", real)):
                    r = mouth_audio_correlation(motion, item["audio_rms"])
                    if r is not None:
                        errors[f"val/mouth_audio_corr_{name}"].append(r)
        return {k: float(np.mean(v)) for k, v in errors.items() if v and all(map(math.isfinite, v))}
