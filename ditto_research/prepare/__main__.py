"""``python -m ditto_research.prepare videos=DIR|LIST out=DATASET_DIR [...]``: talking videos -> a prepared
training set (see :mod:`ditto_research.prepare`; every ``prepare.*`` key in ``--help`` and in
:class:`~ditto_research.prepare.config.PrepareOptions`)."""

from __future__ import annotations

from omegaconf import DictConfig

from ditto_research.apps import HydraApp
from ditto_research.config import to_config
from ditto_research.errors import InputError
from ditto_research.logs import configure_logging
from ditto_research.prepare.config import PrepareConfig, register_prepare_configs

register_prepare_configs()

APP = HydraApp("prepare", stopped="finished videos are kept in the dataset; a rerun continues")


def prepare(cfg: PrepareConfig) -> None:
    from ditto_research.data.dataset import read_manifest
    from ditto_research.prepare.job import run_prepare
    from ditto_research.prepare.report import summary_lines

    summary = run_prepare(cfg)
    manifest = read_manifest(summary.folder)
    for line in summary_lines(manifest):
        print(line)
    if summary.report is not None:
        print(f"report: {summary.report}")
    print(
        f"{summary.folder}: {summary.kept} videos kept, {summary.skipped} skipped, {summary.clips} clips "
        f"written in {summary.seconds:.1f} s"
    )
    if summary.all_failed:
        raise InputError(
            f"no video of this job gave a clip ({summary.skipped} skipped: the reasons are above and in "
            f"{summary.folder / 'report.md'})"
        )


@APP.main
def main(cfg: DictConfig) -> None:
    typed = to_config(cfg, PrepareConfig)
    configure_logging(typed.verbose)
    prepare(typed)


if __name__ == "__main__":
    APP.run(main)
