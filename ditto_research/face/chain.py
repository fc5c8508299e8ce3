"""The official face chain's logic, independent of where its four models' answers come from.

Reference ``Source2Info._crop`` + ``_get_eye_info``, per source frame::

    first frame:  boxes = detector(image)             -> the largest box
                  lmk106 = landmark106(image, box)
                  crop224 = crop_image(image, lmk106, 224, scale 1.5, vy -0.1, rotated)
    later frames: crop224 = crop_image(image, previous lmk203, ...)            (tracking)
    both:         lmk203 = landmark203(crop224, M_c2o)  (image pixels)
                  crop512 = crop_image(image, lmk203, 512, crop_scale, crop_vy, rotation)   (registration)
                  lmk478 = landmarker(crop512)                                            (eye attributes)

:class:`LandmarkChain` runs that logic; subclasses answer the four model calls: :class:`~ditto_research.face.
official_frontend.OfficialFrontend` with the checkpoint's models, :class:`~ditto_research.face.given.
GivenFrontend` from a file of recorded answers (so ``face=given`` exercises exactly the code ``face=official``
uses).
"""

from __future__ import annotations

import numpy as np

from ditto_research.face.crop import LANDMARKS_106, LANDMARKS_203, CropLandmarkGroups, WarpBackend, crop_image
from ditto_research.face.frontend import (
    FaceFrontend,
    FaceLandmarks,
    check_face_inside,
    check_face_size,
    check_not_profile,
    check_rgb,
    choose_face,
    no_face_error,
    points_box,
)

__all__ = ["LandmarkChain"]

CROP224_SIZE = 224
CROP224_SCALE = 1.5
CROP224_VY_RATIO = -0.1


class LandmarkChain(FaceFrontend):
    """Detection -> 106 -> 203 (or tracking from the previous 203) with the reference's crops.

    Subclasses implement :meth:`detect`, :meth:`landmarks106`, :meth:`run_landmark203`,
    :meth:`landmarks478` and :meth:`close`; ``size203`` is the 203 model's crop size.
    """

    min_face_size: int = 0
    # The acceptance policy of the MediaPipe front-end (a face cut by the frame edge, a profile); off by
    # default because the original animates whatever it finds (parity).
    reject_unusable: bool = False
    warp_backend: WarpBackend = "exact"
    select: str | int = "largest"
    size203: int = CROP224_SIZE

    def locate(
        self,
        rgb: np.ndarray,
        previous: FaceLandmarks | None = None,
        *,
        what: str = "the image",
        index: int = 0,
    ) -> FaceLandmarks:
        """203 landmarks: detect -> 106 -> 203, or track from ``previous``'s 203 points (num_faces 1)."""
        rgb = check_rgb(rgb, what)
        if previous is not None and previous.groups == LANDMARKS_203 and len(previous.points) == 203:
            points = self.landmarks203(rgb, previous.points, LANDMARKS_203, index=index)
            return FaceLandmarks(points=points, groups=LANDMARKS_203, box=points_box(points), num_faces=1)
        faces = self.detect(rgb, index=index)
        if len(faces) == 0:
            raise no_face_error(what)
        box = faces[choose_face(faces, self.select, rgb.shape[:2], what), :4]
        check_face_size(box, self.min_face_size, what)
        if self.reject_unusable:
            check_face_inside(box, rgb.shape[:2], what)
        lmk106 = self.landmarks106(rgb, box, index=index)
        points = self.landmarks203(rgb, lmk106, LANDMARKS_106, index=index)
        return FaceLandmarks(points=points, groups=LANDMARKS_203, box=box.copy(), num_faces=len(faces))

    def check_registered_face(self, lmk478: np.ndarray, *, what: str = "the face") -> None:
        """With ``reject_unusable``: refuse a profile, judged on the registration crop's 478 landmarks (the
        chain's own 106 / 203 points do not say where the cheeks are)."""
        if self.reject_unusable:
            check_not_profile(np.asarray(lmk478)[0], what)

    def landmarks203(
        self, rgb: np.ndarray, points: np.ndarray, groups: CropLandmarkGroups, *, index: int = 0
    ) -> np.ndarray:
        """(203, 2) float32 image pixels from the 224 crop placed by ``points`` (106 or the previous 203)."""
        crop = crop_image(
            rgb,
            points,
            dsize=self.size203,
            scale=CROP224_SCALE,
            vy_ratio=CROP224_VY_RATIO,
            landmarks=groups,
            backend=self.warp_backend,
        )
        return self.run_landmark203(crop.img_crop, crop.M_c2o, index=index)

    # ---- the four model calls -------------------------------------------------------------------------

    def detect(self, rgb: np.ndarray, *, index: int = 0) -> np.ndarray:
        """(F, 5) float32 face boxes x1, y1, x2, y2, score in ``rgb`` pixels (F may be 0)."""
        raise NotImplementedError

    def landmarks106(self, rgb: np.ndarray, box: np.ndarray, *, index: int = 0) -> np.ndarray:
        """(106, 2) float32 image pixels of the face in ``box`` (x1, y1, x2, y2)."""
        raise NotImplementedError

    def run_landmark203(self, crop224: np.ndarray, M_c2o: np.ndarray, *, index: int = 0) -> np.ndarray:
        """(203, 2) float32 image pixels from the 224 crop and its crop -> image matrix (3, 3)."""
        raise NotImplementedError
