"""Builds the face front-end a config names: ``official`` (the checkpoint's files), ``mediapipe``, ``given``
(recorded landmarks) or ``auto``. Kept apart from :mod:`ditto_research.face.frontend` (the protocol and the
checks every front-end shares), so the front-ends import that module and this one imports them: no circle.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ditto_research.checkpoints import FACE_FILES
from ditto_research.choices import FACE_NAMES
from ditto_research.errors import CheckpointError, ConfigError
from ditto_research.face.crop import WarpBackend
from ditto_research.face.frontend import FaceFrontend, FrontendName
from ditto_research.face.landmark_file import GivenLandmarks
from ditto_research.face.select import check_select

__all__ = ["FRONTEND_NAMES", "make_frontend", "official_files_present"]

FRONTEND_NAMES = FACE_NAMES

log = logging.getLogger(__name__)


def official_files_present(aux_dir: Path | None) -> bool:
    """True when ``aux_dir`` holds all four official face files (det, 106, 203, face_landmarker.task)."""
    return aux_dir is not None and all((Path(aux_dir) / name).is_file() for name in FACE_FILES)


def make_frontend(
    name: FrontendName,
    aux_dir: Path | None,
    min_face_size: int = 0,
    *,
    warp_backend: WarpBackend = "exact",
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    verbose: bool = False,
    landmarks: GivenLandmarks | str | Path | None = None,
    select: str | int = "largest",
    reject_unusable: bool | None = None,
) -> FaceFrontend:
    """Build a front-end: ``official`` (files from ``aux_dir``), ``mediapipe``, or ``auto`` (official when all
    of :data:`~ditto_research.checkpoints.FACE_FILES` are in ``aux_dir``, else mediapipe).

    ``min_face_size`` (pixels, 0 = any): smaller faces raise InputError. ``warp_backend`` is the crop warp
    used inside the official chain; ``providers`` are onnxruntime execution providers for it. ``verbose``
    lets the mediapipe front-end's native INFO / WARNING lines through to stderr. ``given`` answers the
    official chain's model calls from the ``landmarks`` file (:mod:`ditto_research.face.landmark_file`; a
    path, or the :class:`GivenLandmarks` the config read when it validated).
    ``select`` picks the face when there are several (:func:`choose_face`: largest, center, or i-th from the
    left). ``reject_unusable`` refuses a face cut by the frame edge or a profile (None: the front-end's own
    default, on for mediapipe, off for the official chain and ``given`` as in the original).
    """
    check_select(select)
    if name not in FRONTEND_NAMES:
        raise ConfigError(f"unknown face front-end {name!r}; expected one of {FRONTEND_NAMES}")
    if min_face_size < 0:
        raise ConfigError(f"min_face_size must be >= 0 pixels, got {min_face_size}")
    if name == "given":
        if landmarks is None:
            raise ConfigError(
                "face=given needs face.landmarks=FILE.npz (see ditto_research/face/landmark_file.py)"
            )
        from ditto_research.face.given import GivenFrontend

        return GivenFrontend(
            landmarks,
            min_face_size=min_face_size,
            warp_backend=warp_backend,
            select=select,
            reject_unusable=bool(reject_unusable),
        )
    if name == "auto":
        name = "official" if official_files_present(aux_dir) else "mediapipe"
        log.info(
            "face front-end: %s (%s)",
            name,
            f"official files found in {aux_dir}" if name == "official" else "official files not found",
        )
    if name == "official":
        if aux_dir is None or not official_files_present(aux_dir):
            missing = [n for n in FACE_FILES if aux_dir is None or not (Path(aux_dir) / n).is_file()]
            raise CheckpointError(
                f"face front-end 'official' needs {', '.join(missing)} in {aux_dir}: download the "
                "checkpoints (ditto_pytorch/aux_models) or use face=mediapipe"
            )
        from ditto_research.face.official_frontend import OfficialFrontend

        return OfficialFrontend.from_dir(
            Path(aux_dir),
            min_face_size=min_face_size,
            warp_backend=warp_backend,
            providers=providers,
            select=select,
            reject_unusable=bool(reject_unusable),
        )
    from ditto_research.face.mediapipe_frontend import MediaPipeFrontend

    return MediaPipeFrontend(
        min_face_size=min_face_size,
        verbose=verbose,
        select=select,
        reject_unusable=True if reject_unusable is None else reject_unusable,
    )
