"""ditto-research: real-time audio-driven talking-head synthesis around the Ditto model."""

from ditto_research.errors import (
    CheckpointError,
    ConfigError,
    DittoError,
    ExportError,
    InputError,
    StageError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DittoError",
    "ExportError",
    "InputError",
    "StageError",
    "__version__",
]
