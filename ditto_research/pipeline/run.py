"""What ``python -m ditto_research.infer`` does with a composed config: validate, check inputs, generate."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from ditto_research.checkpoints import check_root
from ditto_research.config import InferConfig, PipelineConfig, to_config
from ditto_research.errors import ConfigError, InputError
from ditto_research.media.output_files import reserve_output

log = logging.getLogger(__name__)


def required_checkpoint_parts(cfg: PipelineConfig) -> tuple[str, ...]:
    """Which parts of the checkpoint root this configuration reads."""
    parts: list[str] = []
    if cfg.model.name == "ditto" and cfg.backend.name == "pytorch":  # onnx / tensorrt report their own files
        parts.append("models")
    if cfg.audio_encoder_name == "hubert_onnx" and cfg.audio_encoder.path is None:
        parts.append("hubert")
    if cfg.face.name == "official":
        parts.append("face")
    return tuple(parts)


def check_inputs(cfg: InferConfig) -> None:
    """Fail before any model loads: missing inputs, an output that would overwrite an input or an existing
    file."""
    for label, value in (("source", cfg.source), ("audio", cfg.audio)):
        if value is not None and Path(value).expanduser().is_dir():
            raise InputError(f"{label}={value} is a folder; pass {label}=PATH to a file in it")
        if value is not None and not Path(value).expanduser().is_file():
            raise InputError(f"{label} file {value} does not exist; pass {label}=PATH to an existing file")
    out = Path(cfg.output).expanduser()
    if out.is_dir():
        raise ConfigError(f"output={cfg.output} is a folder; give a file name such as {out / 'out.mp4'}")
    if out.suffix.lower() != ".mp4":
        raise ConfigError(f"output={cfg.output} must end in .mp4")
    for label, value in (("source", cfg.source), ("audio", cfg.audio)):
        if value is not None and out.resolve() == Path(value).expanduser().resolve():
            raise ConfigError(f"output={cfg.output} is the {label} file; choose another output path")
    if out.exists() and not cfg.overwrite:
        raise ConfigError(f"output {cfg.output} already exists; pass overwrite=true or choose another path")
    if not out.parent.is_dir():
        raise ConfigError(
            f"output folder {out.parent} does not exist; create it or choose another output path"
        )
    try:
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as e:
        raise ConfigError(
            f"output folder {out.parent} is not writable ({e.strerror}); choose another output path"
        ) from e


def validate(cfg: DictConfig) -> InferConfig:
    """Typed, checked config plus the checkpoint files it needs (raises one clear DittoError)."""
    typed = to_config(cfg)
    check_inputs(typed)
    parts = required_checkpoint_parts(typed)
    if parts:
        check_root(typed.model.checkpoint_root, parts, lmdm_file=typed.model.lmdm_file)
    return typed


def resolve_inputs(cfg: InferConfig) -> tuple[Path, Path]:
    """The source and audio paths, falling back to the bundled example (generated locally on first use)."""
    from ditto_research.examples import example_audio, example_source

    source = Path(cfg.source).expanduser() if cfg.source else example_source()
    audio = Path(cfg.audio).expanduser() if cfg.audio else example_audio()
    if cfg.source is None or cfg.audio is None:
        log.info("using the bundled example: source=%s audio=%s", source, audio)
    return source, audio


def run(cfg: DictConfig) -> Path:
    """Validate ``cfg`` and generate the video offline, or stream the file through the online pipeline
    (``mode=online``; at 1x speed with ``mode.realtime=true``). Returns the output path."""
    from ditto_research.pipeline.engine import Engine
    from ditto_research.pipeline.online import StreamingSession
    from ditto_research.pipeline.session import TalkingHeadSession

    typed = validate(cfg)
    # The bundled example (made in the cache on first use) before the output is touched: a cache that cannot
    # hold it leaves no reservation behind.
    source, audio = resolve_inputs(typed)
    online = typed.mode.name == "online"
    # The output is ours from now on: a second run asking for it is refused before loading anything, and
    # whatever stops this one (an error, a signal) gives it back.
    with reserve_output(typed.output, typed.overwrite):
        engine = Engine(typed)
        try:
            if online:
                result = StreamingSession(engine).run_file(source, audio, typed.output)
            else:
                result = TalkingHeadSession(engine).generate(source, audio, typed.output)
        finally:
            engine.close()
    print(f"done: {result.summary()}")
    if online and result.realtime:
        stages = ", ".join(f"{name} {ms:.0f}" for name, ms in result.stage_ms_per_frame.items())
        print(f"busy ms per frame by stage: {stages}")
    return Path(typed.output)
