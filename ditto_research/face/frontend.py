"""Face front-ends for source registration: find the face, give the landmarks that place the crop.

Registration (reference ``core/atomic_components/source2info.py``) runs, per source image or video frame::

    face = frontend.locate(rgb, previous)          # crop landmarks in image pixels, groups, box, faces
    crop = crop_face(rgb, face)                    # 512 x 512 rotated crop (scale 2.3, vy -0.125)
    lmk478 = frontend.landmarks478(crop.img_crop)  # (1, 478, 3) on the crop -> eye open / eye ball

Two front-ends implement :class:`FaceFrontend`:

=============  ==============================================================================================
``official``   det_10g (SCRFD) -> largest box -> 2d106det -> 224 crop -> landmark203 through onnxruntime,
               ``face_landmarker.task`` (MediaPipe Tasks) on the crop; the reference models, see
               :mod:`ditto_research.face.official_frontend`.
``mediapipe``  MediaPipe's face networks (BlazeFace, FaceMesh, iris) on LiteRT, no checkpoint files (fetched
               once from the package index: :mod:`ditto_research.face.tflite_models`); 478 points stand in
               for the 203, see :mod:`ditto_research.face.mediapipe_frontend` for the point mapping.
``given``      the official chain's logic on recorded model answers from a file (``face.landmarks``), see
               :mod:`ditto_research.face.given` and :mod:`ditto_research.face.landmark_file`.
=============  ==============================================================================================

``make_frontend("auto", aux_dir, ...)`` picks ``official`` when all four aux files are in ``aux_dir``.

Video tracking: pass the previous frame's :class:`FaceLandmarks` as ``previous``; the official front-end then
skips detection and crops around the previous 203 points (as the reference does), MediaPipe keeps its own
tracker. Front-ends hold native sessions: use one per thread and ``close()`` it (or use ``with``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ditto_research.choices import FACE_NAMES, FaceName
from ditto_research.errors import InputError
from ditto_research.face.crop import CropLandmarkGroups, CropResult, WarpBackend, crop_image
from ditto_research.face.select import check_select

__all__ = [
    "FRONTEND_NAMES",
    "FaceFrontend",
    "FaceLandmarks",
    "FrontendName",
    "crop_face",
]

log = logging.getLogger(__name__)

FrontendName = FaceName
FRONTEND_NAMES = FACE_NAMES
NO_FACE_HINT = "use a frontal portrait where the face is clearly visible and not too small"


@dataclass(frozen=True, eq=False)
class FaceLandmarks:
    """Where the face is in one image.

    ``points`` (N, 2) float32: the crop landmarks in image pixels (x, y); ``groups`` names their eye and mouth
    rows for :func:`~ditto_research.face.crop.crop_image`; ``box`` (4,) float32 face box x1, y1, x2, y2 in
    pixels; ``num_faces``: faces seen in the image (1 when the face was tracked from the previous frame).
    """

    points: np.ndarray
    groups: CropLandmarkGroups
    box: np.ndarray
    num_faces: int

    @property
    def size(self) -> float:
        """Longer side of the face box, in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@runtime_checkable
class FaceFrontend(Protocol):
    """Face detection + landmarks for registration. Implementations subclass this to inherit ``with``."""

    def locate(
        self,
        rgb: np.ndarray,
        previous: FaceLandmarks | None = None,
        *,
        what: str = "the image",
        index: int = 0,
    ) -> FaceLandmarks:
        """Crop landmarks of the (largest) face in ``rgb`` (H, W, 3) uint8 RGB.

        ``previous``: the last frame's result for video tracking (None for a still image or a first frame).
        ``what`` names the input in error messages; ``index`` is the source frame (front-ends that look
        landmarks up per frame use it). Raises InputError when no face is found or the face is smaller than
        the front-end's ``min_face_size``.
        """
        ...

    def landmarks478(
        self, crop_rgb: np.ndarray, *, what: str = "the face crop", index: int = 0
    ) -> np.ndarray:
        """(1, 478, 3) float32 MediaPipe landmarks of the face crop (512, 512, 3) uint8 of source frame
        ``index``.

        Coordinates are normalised like MediaPipe's output and the reference's: x / W, y / H, z on the x
        scale; the reference feeds them to ``EyeAttrUtilsByMP`` unscaled (eye ball moves depend on the unit),
        so pass them to :mod:`ditto_research.face.eye` as they are (multiply by 512 for crop pixels).
        """
        ...

    def check_registered_face(self, lmk478: np.ndarray, *, what: str = "the face") -> None:
        """Apply the acceptance checks that need the (1, 478, 3) crop landmarks of a newly detected face (a
        profile: :func:`check_not_profile`); a front-end that checks at :meth:`locate` leaves this a no-op."""
        return None

    def close(self) -> None:
        """Release the native sessions; the front-end is unusable afterwards."""
        ...

    def __enter__(self) -> FaceFrontend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def crop_face(
    rgb: np.ndarray,
    face: FaceLandmarks,
    dsize: int = 512,
    scale: float = 2.3,
    vx_ratio: float = 0.0,
    vy_ratio: float = -0.125,
    flag_do_rot: bool = True,
    *,
    backend: WarpBackend = "exact",
    honour_vx_ratio: bool = False,
) -> CropResult:
    """The registration crop of ``face`` in ``rgb`` (reference defaults: 512 px, scale 2.3, vy -0.125;
    ``vx_ratio`` ignored as in the reference unless ``honour_vx_ratio``)."""
    return crop_image(
        rgb,
        face.points,
        dsize,
        scale,
        vx_ratio,
        vy_ratio,
        flag_do_rot,
        landmarks=face.groups,
        backend=backend,
        honour_vx_ratio=honour_vx_ratio,
    )


# --------------------------------------------------------------------------------------------------------
# Shared checks for implementations


def check_rgb(rgb: np.ndarray, what: str) -> np.ndarray:
    """``rgb`` as a C-contiguous (H, W, 3) uint8 array, or InputError naming ``what``."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(
            f"{what} must be an (H, W, 3) uint8 RGB image, got shape {getattr(rgb, 'shape', None)} "
            f"dtype {getattr(rgb, 'dtype', type(rgb).__name__)}: convert it to 8-bit RGB"
        )
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise InputError(f"{what} is only {rgb.shape[1]}x{rgb.shape[0]} pixels: give a larger image")
    return np.ascontiguousarray(rgb)


def no_face_error(what: str) -> InputError:
    return InputError(f"no face found in {what}: {NO_FACE_HINT}")


def largest_face(boxes: np.ndarray, what: str) -> int:
    """Row of the largest-area box in (K, >=4) x1, y1, x2, y2 ``boxes`` (K >= 1); logs when K > 1.

    Same selection as the reference (``argsort`` of the negated area, first row).
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    index = int(np.argsort(-area)[0])
    if len(boxes) > 1:
        log.warning(
            "%d faces found in %s; using the largest (box x1, y1, x2, y2 = %s px)",
            len(boxes),
            what,
            [round(float(v)) for v in boxes[index, :4]],
        )
    return index


def choose_face(boxes: np.ndarray, select: str | int, image_hw: tuple[int, int], what: str) -> int:
    """Row of the face ``select`` picks among (K, >=4) x1, y1, x2, y2 ``boxes`` (K >= 1); logs the choice when
    K > 1.

    "largest": the largest area (the reference's rule: ``argsort`` of the negated area, first row);
    "center": the box centre nearest the image centre; an int i: the i-th face from the left (InputError when
    there are fewer).
    """
    if select == "largest":
        return largest_face(boxes, what)
    if select == "center":
        height, width = image_hw
        centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        index = int(np.argmin(np.hypot(centers[:, 0] - width / 2, centers[:, 1] - height / 2)))
        rule = "the one nearest the centre"
    else:
        check_select(select)
        order = np.argsort((boxes[:, 0] + boxes[:, 2]) / 2, kind="stable")
        if int(select) >= len(boxes):
            raise InputError(
                f"face.select={select} asks for face {select} (counted from the left, from 0) but {what} has "
                f"{len(boxes)} face(s): use face.select=0..{len(boxes) - 1}, largest or center"
            )
        index = int(order[int(select)])
        rule = f"face {select} from the left"
    if len(boxes) > 1:
        log.warning(
            "%d faces found in %s; using %s (box x1, y1, x2, y2 = %s px)",
            len(boxes),
            what,
            rule,
            [round(float(v)) for v in boxes[index, :4]],
        )
    return index


# A profile: the nose tip further than this many half face widths from the middle of the cheeks (frontal
# portraits, rotated or mirrored: |turn| <= 0.1 on the face set; scikit-image's camera man: 1.7).
MAX_SIDE_TURN = 0.8


def side_turn(points478: np.ndarray) -> float:
    """How far the face is turned to the side, from (478, 2+) MediaPipe points (pixels or normalised on a
    square crop): the nose tip's offset from the midpoint of the cheek contour points (234 / 454) along the
    line between them, in half face widths (0 frontal, > 1 a profile; in-plane rotation and scale do not
    change it)."""
    left, right, nose = (np.asarray(points478[i, :2], np.float64) for i in (234, 454, 1))
    axis = right - left
    width = float(np.linalg.norm(axis))
    if width < 1e-6:
        return float("inf")
    return float(np.dot(nose - (left + right) / 2, axis / width) / (width / 2))


def check_not_profile(points478: np.ndarray, what: str) -> None:
    """InputError when the face of the (478, 2+) points is turned to the side beyond :data:`MAX_SIDE_TURN`."""
    turn = side_turn(points478)
    if abs(turn) > MAX_SIDE_TURN:
        raise InputError(
            f"the face in {what} is turned to the side (a profile: its nose is {abs(turn):.1f} half face "
            "widths from the middle), which cannot be animated: use a portrait that faces the camera"
        )


def check_face_inside(box: np.ndarray, image_hw: tuple[int, int], what: str, limit: float = 0.15) -> None:
    """InputError when more than ``limit`` of the face box's width or height lies outside the image (a face
    cut by the frame edge cannot be animated: the missing part has no appearance)."""
    height, width = image_hw
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    size_x, size_y = max(x2 - x1, 1e-6), max(y2 - y1, 1e-6)
    outside_x = (max(0.0, -x1) + max(0.0, x2 - width)) / size_x
    outside_y = (max(0.0, -y1) + max(0.0, y2 - height)) / size_y
    outside = max(outside_x, outside_y)
    if outside > limit:
        raise InputError(
            f"the face in {what} is cut by the frame edge ({outside:.0%} of it outside the image): use a "
            "picture with the whole face inside the frame"
        )


def check_face_size(box: np.ndarray, min_face_size: int, what: str) -> None:
    """InputError when the longer side of ``box`` (x1, y1, x2, y2) is below ``min_face_size`` pixels."""
    width, height = float(box[2] - box[0]), float(box[3] - box[1])
    if max(width, height) < min_face_size:
        raise InputError(
            f"the face in {what} is {width:.0f}x{height:.0f} pixels, smaller than min_face_size="
            f"{min_face_size}: use a higher-resolution image or a closer shot (or lower min_face_size)"
        )


def points_box(points: np.ndarray) -> np.ndarray:
    """(4,) float32 x1, y1, x2, y2 around (N, 2) points."""
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(K,) intersection over union of one x1, y1, x2, y2 ``box`` with (K, 4) ``boxes``."""
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:4], boxes[:, 2:4])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = np.prod(box[2:4] - box[:2])
    areas = np.prod(boxes[:, 2:4] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def __getattr__(name: str):  # noqa: ANN202 - module attribute hook
    """``make_frontend`` / ``official_files_present`` moved to :mod:`ditto_research.face.factory` (the factory
    imports the front-ends, which import this module's shared checks); the old names keep working."""
    if name in ("make_frontend", "official_files_present"):
        import warnings

        from ditto_research.face import factory

        warnings.warn(
            f"ditto_research.face.frontend.{name} moved to ditto_research.face.factory.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
