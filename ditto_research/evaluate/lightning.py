"""``executor=lightning``: the clips of a run sharded across devices with PyTorch Lightning
``Trainer.predict``.

For large evaluation sets on several GPUs (or nodes)::

    python -m ditto_research.evaluate.run executor=lightning lightning.accelerator=gpu lightning.devices=4 \\
        lightning.strategy=ddp backend.device=cuda dataset=big_set.csv

Lightning starts one process per device (DDP); each builds the networks of the configuration on its own
device and evaluates its share of the clips (a distributed sampler that never repeats a clip); every process
writes its results to ``<output_dir>/lightning/rank_<r>.json``, and rank 0 merges them, in dataset order, into
the run's results. Per-clip numbers are the same as with ``executor=local``; the run-level stage percentiles
are left out (each process only sees its own calls).

PyTorch Lightning is installed with ditto-research (``lightning``; the older ``pytorch_lightning`` package
works too); a broken installation fails with one clear line.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ditto_research.errors import ConfigError
from ditto_research.evaluate.config import EvaluateConfig
from ditto_research.evaluate.dataset import Clip
from ditto_research.evaluate.measure import ClipContext, evaluate_clip
from ditto_research.evaluate.results import ClipResult, clip_from_dict

__all__ = ["predict_clips"]

log = logging.getLogger(__name__)


def _import_lightning() -> Any:
    """The ``lightning`` package (or the older ``pytorch_lightning``); ConfigError when neither imports."""
    errors = []
    for name in ("lightning", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise ConfigError(
        f"executor=lightning: PyTorch Lightning does not import ({'; '.join(errors)}); reinstall "
        "ditto-research's dependencies (pip install -e . or pip install 'lightning>=2.4,<2.7'), "
        "or use executor=local"
    )


def _first(items: list[int]) -> int:
    """Collate: batches of one clip index."""
    return items[0]


def predict_clips(
    cfg: EvaluateConfig, clips: list[Clip], ctx: ClipContext
) -> tuple[list[ClipResult], float] | None:
    """Evaluate ``clips`` with ``Trainer.predict``. Rank 0 gets every result in dataset order and the longest
    network load time of the processes; the other ranks get None."""
    import torch

    lightning = _import_lightning()
    module = _module_class(lightning)(cfg, clips, ctx)
    settings = cfg.lightning
    trainer = lightning.Trainer(
        accelerator=settings.accelerator,
        devices=settings.devices,
        strategy=settings.strategy,
        num_nodes=settings.num_nodes,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        default_root_dir=str(ctx.output_dir / "lightning"),
    )
    indices: Any = list(range(len(clips)))  # a map-style dataset of clip indices
    loader = torch.utils.data.DataLoader(indices, batch_size=1, collate_fn=_first)
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    shards = ctx.output_dir / "lightning"
    shards.mkdir(parents=True, exist_ok=True)
    shard = {
        "rank": trainer.global_rank,
        "load_s": module.load_s,
        "results": [[index, asdict(result)] for index, result in module.results],
    }
    (shards / f"rank_{trainer.global_rank}.json").write_text(json.dumps(shard, default=str), encoding="utf-8")
    trainer.strategy.barrier()
    if not trainer.is_global_zero:
        return None
    return merge_shards(shards, len(clips))


def merge_shards(folder: Path, num_clips: int) -> tuple[list[ClipResult], float]:
    """The results of every ``rank_*.json`` in ``folder``, one per clip index, in order, and the longest
    load."""
    by_index: dict[int, ClipResult] = {}
    load_s = 0.0
    for path in sorted(folder.glob("rank_*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        load_s = max(load_s, float(data.get("load_s") or 0.0))
        for index, result in data["results"]:
            by_index.setdefault(int(index), clip_from_dict(result))
    missing = [i for i in range(num_clips) if i not in by_index]
    if missing:
        raise ConfigError(
            f"lightning: no result for clips {missing[:10]} (a process died?); see the logs in {folder}"
        )
    return [by_index[i] for i in range(num_clips)], load_s


def _module_class(lightning: Any) -> type:
    """The LightningModule class (defined here so that importing this file does not need Lightning)."""

    class ClipEvaluationModule(lightning.LightningModule):
        """Builds the configuration's networks on this process's device; ``predict_step`` evaluates one
        clip."""

        def __init__(self, cfg: EvaluateConfig, clips: list[Clip], ctx: ClipContext) -> None:
            super().__init__()
            self.cfg, self.clips, self.ctx = cfg, clips, ctx
            self.renderer: Any = None
            self.load_s = 0.0
            self.results: list[tuple[int, ClipResult]] = []

        def setup(self, stage: str) -> None:
            from ditto_research.evaluate.generate import make_renderer

            cfg = self.cfg
            device = "cuda" if self.device.type == "cuda" else "cpu"  # DDP has made this rank's GPU current
            self.renderer = make_renderer(replace(cfg, backend=replace(cfg.backend, device=device)))
            self.load_s = self.renderer.load_s

        def predict_step(self, batch: int, batch_idx: int) -> ClipResult:
            result, _ = evaluate_clip(self.renderer, self.clips[batch], self.ctx)
            log.info("rank %d: clip %s %s", self.global_rank, result.clip_id, result.status)
            self.results.append((int(batch), result))
            return result

        def teardown(self, stage: str) -> None:
            if self.renderer is not None:
                self.renderer.close()
                self.renderer = None

    return ClipEvaluationModule
