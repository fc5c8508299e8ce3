"""MediaPipe FaceMesh front-end (mediapipe 0.10.21 wheel: bundled models, no downloads, no checkpoint files).

FaceMesh (``refine_landmarks=True``) gives 478 points on the whole frame. The registration crop only needs
what the reference's 203 points give it (see :mod:`ditto_research.face.crop`): the mean of each eye's four
ring points and of the two lip corners fix the crop's rotation and centre line, and the extent of *all*
points sizes the box. So the front-end hands the crop a 127-point subset, anchors first:

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
the same 478-point topology, a different model version, so eye attributes are close but not equal.

Tracking: with ``previous`` set, frames go through a second FaceMesh in video mode
(``static_image_mode=False``), which follows the face from frame to frame; of several faces the one
overlapping ``previous.box`` most is kept. A call without ``previous`` resets that tracker.

Logging: building a FaceMesh and running its first frame print MediaPipe / TF Lite INFO and WARNING lines
on stderr; unless ``verbose=True`` they are held back (:mod:`ditto_research.logs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ditto_research.face.crop import CropLandmarkGroups
from ditto_research.face.frontend import (
    FaceFrontend,
    FaceLandmarks,
    box_iou,
    check_face_size,
    check_rgb,
    largest_face,
    no_face_error,
    points_box,
)
from ditto_research.logs import configure_logging, quiet_native_logs

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


class MediaPipeFrontend(FaceFrontend):
    """FaceMesh on the frame for the crop, FaceMesh on the crop for the 478 eye landmarks.

    Args:
        min_face_size: faces whose box (around all 478 points) has a longer side below this many pixels raise
            InputError on detection (0 = any size).
        max_faces: faces FaceMesh looks for; the largest is used.
        min_detection_confidence / min_tracking_confidence: FaceMesh thresholds (its defaults).
        verbose: let MediaPipe's own INFO / WARNING lines through to stderr.
    """

    def __init__(
        self,
        *,
        min_face_size: int = 0,
        max_faces: int = 4,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        verbose: bool = False,
    ) -> None:
        configure_logging(verbose)
        self.min_face_size = min_face_size
        self.verbose = verbose
        self.max_faces = max_faces
        self._confidence = (min_detection_confidence, min_tracking_confidence)
        self._meshes: dict[str, Any] = {}  # "image", "video", "crop" -> FaceMesh, created on first use
        self._fresh: set[str] = set()  # meshes that have not run a frame yet (their first frame logs)

    # ----------------------------------------------------------------------------------------------------

    def locate(
        self,
        rgb: np.ndarray,
        previous: FaceLandmarks | None = None,
        *,
        what: str = "the image",
        index: int = 0,
    ) -> FaceLandmarks:
        """Crop landmarks (127, 2) of the largest face (or the tracked one); see the module docstring."""
        rgb = check_rgb(rgb, what)
        if previous is None:
            self._drop("video")  # a new image or video: the next tracked frame starts a fresh tracker
        meshes = self._run("image" if previous is None else "video", rgb)
        if not meshes:
            raise no_face_error(what)
        height, width = rgb.shape[:2]
        pixels = [mesh[:, :2] * np.array([width, height], dtype=np.float32) for mesh in meshes]
        boxes = np.stack([points_box(p) for p in pixels])
        if previous is None:
            chosen = largest_face(boxes, what)
            check_face_size(boxes[chosen], self.min_face_size, what)
        else:
            overlap = box_iou(previous.box, boxes)
            chosen = int(np.argmax(overlap)) if overlap.max() > 0 else largest_face(boxes, what)
        points = np.ascontiguousarray(pixels[chosen][list(FACEMESH_CROP_POINTS)])
        return FaceLandmarks(
            points=points, groups=FACEMESH_CROP_GROUPS, box=boxes[chosen], num_faces=len(meshes)
        )

    def landmarks478(
        self, crop_rgb: np.ndarray, *, what: str = "the face crop", index: int = 0
    ) -> np.ndarray:
        """(1, 478, 3) float32 normalised FaceMesh landmarks of the face in the crop."""
        meshes = self._run("crop", check_rgb(crop_rgb, what))
        if not meshes:
            raise no_face_error(what)
        return meshes[0][None]

    def close(self) -> None:
        for key in list(self._meshes):
            self._drop(key)

    # ----------------------------------------------------------------------------------------------------

    def _mesh(self, key: str) -> Any:
        if key not in self._meshes:
            from mediapipe.python.solutions.face_mesh import FaceMesh

            detection, tracking = self._confidence
            self._meshes[key] = FaceMesh(
                static_image_mode=key != "video",
                max_num_faces=1 if key == "crop" else self.max_faces,
                refine_landmarks=True,
                min_detection_confidence=detection,
                min_tracking_confidence=tracking,
            )
            self._fresh.add(key)
        return self._meshes[key]

    def _drop(self, key: str) -> None:
        self._fresh.discard(key)
        mesh = self._meshes.pop(key, None)
        if mesh is not None:
            mesh.close()

    def _process(self, key: str, rgb: np.ndarray) -> Any:
        """FaceMesh ``key``'s raw result on ``rgb``; building it and its first frame run with native logs
        quiet (the graph's threads log while they load the models, which has finished once a frame came
        out)."""
        if key in self._meshes and key not in self._fresh:
            return self._meshes[key].process(rgb)
        with quiet_native_logs(self.verbose):
            result = self._mesh(key).process(rgb)
        self._fresh.discard(key)
        return result

    def _run(self, key: str, rgb: np.ndarray) -> list[np.ndarray]:
        """FaceMesh on ``rgb``: one (478, 3) float32 array of normalised x, y, z per face found."""
        result = self._process(key, rgb)
        faces = result.multi_face_landmarks or []
        meshes = [np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32) for face in faces]
        return [mesh for mesh in meshes if len(mesh) == _NUM_POINTS]
