"""One exception family for everything a user can get wrong, and one for a stage that broke.

The CLI turns any :class:`DittoError` into a single line on stderr and exit code 2. Everything else is a bug
and keeps its traceback (exit 1): that includes :class:`StageError`, an unexpected exception inside a pipeline
stage (a :class:`DittoError` raised inside a stage reaches the caller as itself, not wrapped).
"""

from __future__ import annotations


class DittoError(Exception):
    """Base class: the message is written for the user (what was wrong with which input, and what to do)."""


class ConfigError(DittoError):
    """A configuration value is invalid or inconsistent."""


class InputError(DittoError):
    """A user-provided file or value (image, video, audio, control file) cannot be used."""


class CheckpointError(DittoError):
    """A checkpoint root or file is missing, malformed, or does not match the network it is loaded into."""


class StageError(RuntimeError):
    """An unexpected exception inside a pipeline stage (a bug, not a user error): carries the stage name and
    the cause (also its ``__cause__``, so the traceback shows where it happened)."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage '{stage}' failed: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause


class ExportError(DittoError):
    """An export (ONNX / TensorRT) failed or did not verify."""
