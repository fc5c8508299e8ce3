"""``python -m ditto_research.infer source=PATH audio=PATH output=PATH [+preset=NAME] [group=option ...]``.

Composes ``conf/infer.yaml`` and hands the result to :func:`ditto_research.pipeline.run.run`. User errors
(:class:`DittoError`) become one line on stderr and exit code 2; ``--help`` lists the config groups and presets.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ditto_research.config import CONF_DIR, register_configs
from ditto_research.errors import DittoError

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="infer", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from ditto_research.pipeline.run import run

    try:
        run(cfg)
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
