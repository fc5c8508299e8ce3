"""Config schemas (registered in Hydra's ConfigStore) and helpers to compose and validate them.

``register_configs()`` must run before Hydra composes ``conf/``; ``to_config`` turns a composed DictConfig
into the typed dataclasses (running every value check) and converts failures into :class:`ConfigError`.
``compose`` (the Python API; the CLIs' pre-check in :mod:`ditto_research.command_line` uses it too) turns
composition errors into one ConfigError line; an unknown key names the keys its schema has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ditto_research.cache import folder_write_error
from ditto_research.config.schema import (
    SAMPLER_SCHEMAS,
    AudioEncoderConfig,
    BackendConfig,
    ControlConfig,
    DDIMSamplerConfig,
    FaceConfig,
    InferConfig,
    ModeConfig,
    ModelConfig,
    MotionConfig,
    ODESamplerConfig,
    PipelineConfig,
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
    """Store each group schema as ``schema_<group>`` and each sampler's as ``schema_sampler_<name>`` (group
    YAMLs extend them via ``/schema_<group>@_here_``), and the root as ``base_infer``."""
    cs = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(name=f"schema_{group}", node=schema)
    for name, schema in SAMPLER_SCHEMAS.items():
        cs.store(name=f"schema_sampler_{name}", node=schema)
    cs.store(name="base_infer", node=InferConfig)


def to_config(cfg: DictConfig, schema: type[T] = InferConfig) -> T:
    """Validate a composed config and return the typed object (raises ConfigError with one clear line)."""
    check_known_keys(cfg)
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


def check_known_keys(cfg: DictConfig, path: str = "") -> None:
    """Every key of every schema-typed node is a field of its schema (``+group.key=...`` adds keys Hydra lets
    through; the schema would otherwise fail later with a bare TypeError/AttributeError)."""
    schema = OmegaConf.get_type(cfg)
    names = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key, value in cfg.items_ex(resolve=False):
        full_key = f"{path}.{key}" if path else str(key)
        if names is not None and key not in names:
            raise ConfigError(unknown_key_message(full_key, schema, cfg))
        if isinstance(value, DictConfig) and not OmegaConf.is_missing(cfg, key) and cfg.get(key) is not None:
            check_known_keys(value, full_key)


def unknown_key_message(full_key: str, schema: type, node: Any = None) -> str:
    """``sampler.eta is not a key of sampler=dpmpp_2m; valid keys: name, steps, guidance_scale (...)``."""
    parent, _, key = full_key.rpartition(".")
    name = _node_name(node)
    where = f"{parent}={name}" if parent and name else (parent or "the root config")
    valid = ", ".join(f.name for f in dataclasses.fields(schema))
    message = f"{full_key} is not a key of {where}; valid keys: {valid}"
    if parent == "sampler":
        takers = sorted(
            {n for n, s in SAMPLER_SCHEMAS.items() if key in {f.name for f in dataclasses.fields(s)}}
        )
        if takers:
            message += f" ({key} is an option of sampler={', '.join(takers)})"
    return message


def _node_name(node: Any) -> str | None:
    try:
        name = node.get("name") if isinstance(node, DictConfig) else None
    except OmegaConfBaseException:
        return None
    return name if isinstance(name, str) else None


def composition_error(error: Exception) -> ConfigError:
    """One ConfigError line for a Hydra composition failure (unknown keys name their schema's keys)."""
    for cause in _chain(error):
        schema = getattr(cause, "object_type", None)
        full_key = getattr(cause, "full_key", None)
        if isinstance(cause, OmegaConfBaseException) and full_key and dataclasses.is_dataclass(schema):
            key = full_key.rpartition(".")[2]
            if key not in {f.name for f in dataclasses.fields(schema)}:
                return ConfigError(unknown_key_message(full_key, schema, getattr(cause, "parent_node", None)))
    text = str(error)
    if isinstance(error, MissingConfigException) and "Available options in " in text:
        head, _, options = text.partition("Available options in ")
        group, _, listing = options.partition(":")
        choices = []
        for line in listing.splitlines()[1:]:
            if not line.startswith("\t"):
                break
            choices.append(line.strip())
        return ConfigError(f"{head.strip()}; available options in {group}: {', '.join(choices)}")
    lines = [line.strip() for cause in _chain(error) for line in str(cause).splitlines() if line.strip()]
    return ConfigError("; ".join(dict.fromkeys(lines[:3])) or type(error).__name__)


def _chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def compose(config_name: str = "infer", overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with command-line style overrides (for the Python API and tests);
    composition errors become one ConfigError line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    with _COMPOSE_LOCK:
        inside_app = GlobalHydra.instance().is_initialized()  # e.g. a server session inside @hydra.main
        context = (
            contextlib.nullcontext()
            if inside_app
            else initialize_config_dir(str(CONF_DIR), version_base="1.3")
        )
        with context:
            try:
                return hydra_compose(config_name=config_name, overrides=list(overrides or []))
            except (HydraException, OmegaConfBaseException) as e:
                raise composition_error(e) from e


# Hydra's composition state is process-global and not thread-safe (a server composes per-session configs from
# several threads): one composition at a time.
_COMPOSE_LOCK = threading.Lock()


__all__ = [
    "AudioEncoderConfig",
    "BackendConfig",
    "CONF_DIR",
    "ControlConfig",
    "DDIMSamplerConfig",
    "FaceConfig",
    "GROUP_SCHEMAS",
    "InferConfig",
    "ModeConfig",
    "ModelConfig",
    "MotionConfig",
    "ODESamplerConfig",
    "PipelineConfig",
    "SAMPLER_SCHEMAS",
    "SamplerConfig",
    "check_known_keys",
    "compose",
    "composition_error",
    "folder_write_error",
    "register_configs",
    "to_config",
]
