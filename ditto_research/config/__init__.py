"""Config schemas (registered in Hydra's ConfigStore) and helpers to compose and validate them.

``register_configs()`` must run before Hydra composes ``conf/``; ``to_config`` turns a composed DictConfig
into the typed dataclasses (running every value check) and converts failures into :class:`ConfigError`.
``compose`` (the Python API) and ``check_command_line`` (the CLIs, before Hydra's own composition) turn
composition errors into one ConfigError line; an unknown key names the keys its schema has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import threading
from collections.abc import Sequence
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
    SamplerConfig,
)
from ditto_research.errors import ConfigError, DittoError, InputError

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


# Hydra command-line flags that take a value, and those after which there is nothing for us to check.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}
_FLAGS_HYDRA_HANDLES = {
    "-m",
    "--multirun",
    "-h",
    "--help",
    "--hydra-help",
    "--version",
    "-i",
    "--info",
    "-sc",
    "--shell-completion",
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-cd",
    "--config-dir",
    "--experimental-rerun",
}


def check_command_line(config_name: str, args: Sequence[str]) -> None:
    """Compose ``args`` (a CLI's ``sys.argv[1:]``) once before Hydra does, so a bad override is one
    ConfigError line naming the allowed keys or options instead of Hydra's multi-line report. Multirun, help
    and config-path flags are left to Hydra."""
    overrides: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in _FLAGS_HYDRA_HANDLES:
            return
        if flag in _FLAGS_WITH_VALUE:
            skip_value = "=" not in arg
            continue
        if arg.startswith("-") and not arg.startswith("--"):
            continue
        if not arg.startswith("-") and not arg.lstrip("+~").startswith("hydra"):
            overrides.append(arg)
    compose(config_name, overrides)


def _parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        OverridesParser.create().parse_override(override)
    except (HydraException, OmegaConfBaseException, ValueError):
        return False
    return True


def _hydra_quote(value: str) -> str:
    """``value`` as a single-quoted Hydra string: quotes escaped, and the backslashes before a quote or the
    closing quote doubled (Hydra's escaping rule)."""
    out, run = [], 0
    for ch in value:
        if ch == "\\":
            run += 1
            continue
        if ch == "'":
            out.append("\\" * (2 * run) + "\\'")
        else:
            out.append("\\" * run + ch)
        run = 0
    out.append("\\" * (2 * run))
    return "'" + "".join(out) + "'"


def quote_override_values(args: Sequence[str]) -> list[str]:
    """Command-line overrides whose value Hydra's lexer rejects (spaces next to other symbols, non-ASCII,
    parentheses, quotes, ...: file names as people have them) get their value quoted, so
    ``source=my face é (1).png`` means that file. Values that parse, flags, and values that start like a list,
    a dict or a quoted string are left alone.

    Raises:
        ConfigError: an override that does not parse even quoted (one line saying how to quote it).
    """
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if arg.startswith("-") or not sep or _parses(arg):
            out.append(arg)
            continue
        structured = value[:1] in ("'", '"', "[", "{") or "${" in value
        quoted = f"{key}={_hydra_quote(value)}"
        if structured or not _parses(quoted):
            raise ConfigError(
                f"cannot read the override {arg!r} (a list, dict, quote or ${{...}} not closed?); to pass it "
                f"as text, quote the value for Hydra: {key}=\"'...'\" in the shell"
            )
        out.append(quoted)
    return out


def _writable(folder: Path) -> bool:
    return folder_write_error(folder) is None


def writable_run_root(app: str) -> Path | None:
    """Where Hydra's run folders go when the current folder is not writable: ``outputs/<app>`` in the cache
    (:mod:`ditto_research.cache`), else in the system's temporary folder (None: no writable place found).

    Raises:
        InputError: ``DITTO_CACHE_DIR`` is set but cannot hold files (the user chose it: no silent fallback).
    """
    from ditto_research.cache import cache_folder, is_cache_root_chosen  # lazily: it reads the environment

    try:
        return cache_folder("outputs", app)
    except InputError:
        if is_cache_root_chosen():
            raise
    fallback = Path(tempfile.gettempdir()) / "ditto_research" / "outputs" / app
    return fallback if _writable(fallback) else None


def ensure_writable_run_dir(app: str, args: list[str]) -> list[str]:
    """``args`` with ``hydra.run.dir`` / ``hydra.sweep.dir`` moved to :func:`writable_run_root` (and a
    warning line) when the current folder, where they go by default (``outputs/``), is not writable and the
    command line does not set them; otherwise unchanged."""
    default = Path.cwd() / "outputs"
    if default.is_dir():
        writable = _writable(default)
    else:  # "outputs" must be creatable: no file of that name, a writable folder
        writable = not default.exists() and os.access(Path.cwd(), os.W_OK | os.X_OK)
    if writable or any(a.lstrip("+").startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in args):
        return args
    root = writable_run_root(app)
    if root is None:
        return args  # Hydra reports it
    stamp = "${now:%Y-%m-%d_%H-%M-%S}"
    print(
        f"warning: the current folder {Path.cwd()} is not writable; run logs and results go to {root}",
        file=sys.stderr,
    )
    return [
        *args,
        f"hydra.run.dir={_hydra_quote(f'{root}/{stamp}')}",
        f"hydra.sweep.dir={_hydra_quote(f'{root}/multirun/{stamp}')}",
    ]


def check_command_line_or_exit(config_name: str) -> None:
    """:func:`check_command_line` on ``sys.argv[1:]`` for an app's ``__main__``: values Hydra cannot lex are
    quoted in place (:func:`quote_override_values`), Hydra's run folder moves somewhere writable when the
    current folder is not (:func:`ensure_writable_run_dir`), and a bad override is one line on stderr and exit
    code 2, before Hydra starts."""
    try:
        sys.argv[1:] = ensure_writable_run_dir(config_name, quote_override_values(sys.argv[1:]))
        check_command_line(config_name, sys.argv[1:])
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


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
    "SAMPLER_SCHEMAS",
    "SamplerConfig",
    "check_command_line",
    "check_command_line_or_exit",
    "check_known_keys",
    "compose",
    "composition_error",
    "folder_write_error",
    "quote_override_values",
    "register_configs",
    "to_config",
]
