"""Config schemas (registered in Hydra's ConfigStore) and helpers to compose and validate them.

``register_configs()`` must run before Hydra composes ``conf/``; ``to_config`` turns a composed DictConfig into
the typed dataclasses (running every cross-field check) and converts failures into :class:`ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ditto_research.config.schema import (
    AudioEncoderConfig,
    BackendConfig,
    ControlConfig,
    FaceConfig,
    InferConfig,
    ModeConfig,
    ModelConfig,
    MotionConfig,
    SamplerConfig,
)
from ditto_research.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # package data: ships inside the wheel

GROUP_SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "backend": BackendConfig,
    "mode": ModeConfig,
    "sampler": SamplerConfig,
    "face": FaceConfig,
    "audio_encoder": AudioEncoderConfig,
    "control": ControlConfig,
}

T = TypeVar("T")


def register_configs() -> None:
    """Store each group schema as ``schema_<group>`` (group YAMLs extend it via ``/schema_<group>@_here_``)."""
    cs = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(name=f"schema_{group}", node=schema)
    cs.store(name="base_infer", node=InferConfig)


def to_config(cfg: DictConfig, schema: type[T] = InferConfig) -> T:
    """Validate a composed config and return the typed object (raises ConfigError with one clear line)."""
    try:
        obj = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        cause = e.__cause__ if isinstance(e.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from e
        raise ConfigError(f"invalid config: {e}".splitlines()[0]) from e
    if not isinstance(obj, schema):
        raise ConfigError(f"expected a {schema.__name__} config, got {type(obj).__name__}")
    return obj


def compose(config_name: str = "infer", overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with command-line style overrides (for the Python API and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))


__all__ = [
    "AudioEncoderConfig",
    "BackendConfig",
    "CONF_DIR",
    "ControlConfig",
    "FaceConfig",
    "GROUP_SCHEMAS",
    "InferConfig",
    "ModeConfig",
    "ModelConfig",
    "MotionConfig",
    "SamplerConfig",
    "compose",
    "register_configs",
    "to_config",
]
