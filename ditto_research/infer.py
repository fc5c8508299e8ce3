"""``python -m ditto_research.infer source=PATH audio=PATH output=PATH [+preset=NAME] [group=option ...]``.

Composes ``conf/infer.yaml`` and hands the result to :func:`ditto_research.pipeline.run.run`. Errors, stops
and exit codes are the shell's (:mod:`ditto_research.apps`): a user error is one line and exit 2, a bug its
traceback, :data:`BUG_LINE` and exit 1; SIGINT / SIGTERM / SIGHUP stop the run cleanly (no partial output, no
temporary files, every thread and ffmpeg child stopped): ``interrupted: no output written`` and exit 130 /
143 / 129. ``--help`` lists the config groups and presets.
"""

from __future__ import annotations

from omegaconf import DictConfig

from ditto_research.apps import BUG_LINE, HydraApp
from ditto_research.config import register_configs
from ditto_research.logs import configure_logging

__all__ = ["APP", "BUG_LINE", "main"]

register_configs()

APP = HydraApp("infer", stopped="no output written")


@APP.main
def main(cfg: DictConfig) -> None:
    configure_logging(bool(cfg.get("verbose", False)))  # before mediapipe is imported
    from ditto_research.pipeline.run import run

    run(cfg)


if __name__ == "__main__":
    APP.run(main)
