"""What ``python -m ditto_research.infer`` does with a composed config: validate, check inputs, generate."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ditto_research.checkpoints import CheckpointRoot, check_root
from ditto_research.config import InferConfig, to_config
from ditto_research.errors import ConfigError, InputError

log = logging.getLogger(__name__)


def required_checkpoint_parts(cfg: InferConfig) -> tuple[str, ...]:
    """Which parts of the checkpoint root this configuration reads."""
    parts: list[str] = []
    if cfg.model.name == "ditto":
        parts.append("models")
    if cfg.audio_encoder.name == "hubert_onnx" and cfg.audio_encoder.path is None:
        parts.append("hubert")
    if cfg.face.name == "official":
        parts.append("face")
    return tuple(parts)


def check_inputs(cfg: InferConfig) -> None:
    """Fail before any model loads: missing inputs, an output that would overwrite an input or an existing file."""
    for label, value in (("source", cfg.source), ("audio", cfg.audio)):
        if value is not None and not Path(value).is_file():
            raise InputError(f"{label} file {value} does not exist; pass {label}=PATH to an existing file")
    out = Path(cfg.output)
    if out.suffix.lower() != ".mp4":
        raise ConfigError(f"output={cfg.output} must end in .mp4")
    for label, value in (("source", cfg.source), ("audio", cfg.audio)):
        if value is not None and out.resolve() == Path(value).resolve():
            raise ConfigError(f"output={cfg.output} is the {label} file; choose another output path")
    if out.exists() and not cfg.overwrite:
        raise ConfigError(f"output {cfg.output} already exists; pass overwrite=true or choose another path")
    if not out.parent.exists():
        raise ConfigError(f"output folder {out.parent} does not exist; create it or choose another output path")


def validate(cfg: DictConfig) -> InferConfig:
    """Typed, checked config plus the checkpoint files it needs (raises one clear DittoError)."""
    typed = to_config(cfg)
    check_inputs(typed)
    parts = required_checkpoint_parts(typed)
    if parts:
        check_root(typed.model.checkpoint_root, parts, lmdm_file=typed.model.lmdm_file)
    return typed


def run(cfg: DictConfig) -> Path:
    """Validate ``cfg`` and generate the video (returns the output path)."""
    typed = validate(cfg)
    root = CheckpointRoot(Path(typed.model.checkpoint_root))
    log.info("config valid: model=%s backend=%s mode=%s (checkpoint root %s)", typed.model.name,
             typed.backend.name, typed.mode.name, root.root)
    raise ConfigError("video generation is not implemented yet in this build (the offline pipeline is issue #3)")
