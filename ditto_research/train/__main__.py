"""``python -m ditto_research.train data=DATASET_DIR [...]``: train or fine-tune the motion model (see
:mod:`ditto_research.train.run`; every key in ``--help`` and :mod:`ditto_research.train.config`)."""

from __future__ import annotations

import logging
import warnings

from omegaconf import DictConfig

from ditto_research.apps import HydraApp
from ditto_research.config import to_config
from ditto_research.logs import configure_logging
from ditto_research.train.config import TrainConfig, register_train_configs

register_train_configs()

APP = HydraApp("train", stopped="checkpoints written so far are kept: resume=last continues")


@APP.main
def main(cfg: DictConfig) -> None:
    typed = to_config(cfg, TrainConfig)
    configure_logging(typed.verbose)
    if not typed.verbose:  # Lightning's start-up chatter (accelerator table, tips) and its own deprecations
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    from ditto_research.train.run import run_training

    result = run_training(typed)
    if result.lmdm_path is None:
        return  # a non-zero rank of a data-parallel run
    val = result.validation
    print(
        f"{result.output_dir}: {result.steps} steps in {result.seconds:.1f} s on {result.train_windows} "
        f"windows ({result.train_clips} clip{'' if result.train_clips == 1 else 's'}); "
        + (f"held-out loss {val['val/loss']:.4g}; " if "val/loss" in val else "no validation; ")
        + f"weights: {result.lmdm_path} (inference: model.lmdm_path={result.lmdm_path})"
    )


if __name__ == "__main__":
    APP.run(main)
