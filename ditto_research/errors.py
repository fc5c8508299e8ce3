"""One exception family for everything a user can get wrong or a stage can break.

The CLI turns any :class:`DittoError` into a single line on stderr and a non-zero exit; everything else is a
bug and keeps its traceback.
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


class StageError(DittoError):
    """A pipeline stage failed; carries the stage name and re-raises the cause."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage '{stage}' failed: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause


class ExportError(DittoError):
    """An export (ONNX / TensorRT) failed or did not verify."""
