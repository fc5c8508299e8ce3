"""Every choice a config offers, and the check that names them: one table, imported by the config schemas and
by the components alike, so a list cannot drift between the two.

Torch-free and light (the schemas validate before any model is loaded; ``python -c "import
ditto_research.choices"`` imports neither torch nor numpy). The names other modules exported before this
table existed (``backends.base.BACKEND_NAMES``, ``diffusion.noise.NOISE_KINDS``, ``face.frontend.
FRONTEND_NAMES``, ...) are these same objects.

Where a Literal type exists for a choice, the tuple is read from it (``get_args``): written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, get_args

from ditto_research.errors import ConfigError

__all__ = [
    "AUDIO_ENCODER_NAMES",
    "BACKEND_NAMES",
    "BACKEND_PRECISIONS",
    "DEVICE_NAMES",
    "ENCODER_NAMES",
    "EXECUTORS",
    "FACE_NAMES",
    "FADE_TYPES",
    "GRID_SAMPLE_MODES",
    "LMDM_FORMS",
    "LMDM_ORDERS",
    "LOGGER_NAMES",
    "METRIC_NAMES",
    "MODEL_NAMES",
    "MODE_NAMES",
    "NOISE_KINDS",
    "PASTE_MODES",
    "PRECISIONS",
    "SAMPLER_COMMON_OPTIONS",
    "SAMPLER_NAMES",
    "SAMPLER_OPTIONS",
    "WANDB_MODES",
    "FaceName",
    "FadeType",
    "LmdmOrder",
    "NoiseKind",
    "check_choice",
    "check_precision",
]

# ---- infer (config/schema.py) ------------------------------------------------------------------------------

MODEL_NAMES = ("ditto", "untrained", "tiny")
MODE_NAMES = ("offline", "online")
DEVICE_NAMES = ("cpu", "cuda")

BACKEND_NAMES = ("pytorch", "onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")
# The precisions each backend runs the renderer networks in (exported graphs and engines: no bf16).
BACKEND_PRECISIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"pytorch": PRECISIONS, "onnx": ("fp32", "fp16"), "tensorrt": ("fp32", "fp16")}
)
# backend.lmdm_order (pytorch only): fast = batched guidance, cached conditions; reference = the original's
# operation order, bit-identical.
LmdmOrder = Literal["fast", "reference"]
LMDM_ORDERS: tuple[LmdmOrder, ...] = get_args(LmdmOrder)

SAMPLER_NAMES = ("ddim", "dpmpp_2m", "unipc", "euler", "heun")
# Options every sampler takes (besides ``name``), and the ones only some take: sampler -> its own options.
SAMPLER_COMMON_OPTIONS = ("steps", "guidance_scale")
SAMPLER_OPTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"ddim": ("eta",), "dpmpp_2m": (), "unipc": (), "euler": (), "heun": ()}
)

# face: auto picks official or mediapipe; given answers the official chain from a landmarks file.
FaceName = Literal["auto", "official", "mediapipe", "given"]
FACE_NAMES: tuple[FaceName, ...] = get_args(FaceName)

# The speech encoders audio/encoders.py builds; the config adds auto (one of them, by model) and
# precomputed (features read from a file, no encoder).
ENCODER_NAMES = ("hubert_onnx", "hubert_torch", "untrained")
AUDIO_ENCODER_NAMES = ("auto", *ENCODER_NAMES, "precomputed")

# control.noise: the diffusion noise stream (diffusion/noise.py).
NoiseKind = Literal["torch", "numpy"]
NOISE_KINDS: tuple[NoiseKind, ...] = get_args(NoiseKind)
# control.fade_type: "" none, "d0" the first generated frame, "s" the source pose.
FadeType = Literal["", "d0", "s"]
FADE_TYPES: tuple[FadeType, ...] = get_args(FadeType)

PASTE_MODES = ("auto", "exact", "device")

# ---- evaluate (evaluate/config.py) and export (export/config.py) -------------------------------------------

METRIC_NAMES = ("motion", "sync_proxy", "syncnet", "quality")
LOGGER_NAMES = ("wandb", "csv")
WANDB_MODES = ("offline", "online", "disabled")
EXECUTORS = ("local", "lightning")

GRID_SAMPLE_MODES = ("native", "decomposed")
LMDM_FORMS = ("guided_step", "cached", "both")

# ---- checks ------------------------------------------------------------------------------------------------


def _listed(choices: tuple[str, ...]) -> str:
    return ", ".join(choice or "''" for choice in choices)


def check_choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    """ConfigError ``<key>=<value!r> is not valid; choose one of: <choices>`` when ``value`` is not one."""
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {_listed(choices)}")


def check_precision(backend: str, precision: str, key: str = "backend.precision") -> None:
    """ConfigError naming the precisions ``backend`` offers (:data:`BACKEND_PRECISIONS`) when ``precision``
    is not one (``key``: how the error names the setting)."""
    allowed = BACKEND_PRECISIONS[backend]
    if precision not in allowed:
        raise ConfigError(
            f"{key}={precision!r} is not available with backend={backend}; choose one of: {_listed(allowed)}"
        )
