"""LMD (landmark distance) between generated and ground-truth frames, on the mouth and on the whole face.

Definition (Chen et al. 2018, "Lip Movements Generation at a Glance", and the talking-head papers after it
that report M-LMD / F-LMD): for ``T`` frame pairs and ``P`` corresponding landmarks,

    LMD = 1/T sum_t 1/P sum_p || L_pred[t, p] - L_ref[t, p] ||_2

Choices made here (the papers use dlib's 68 points; this project has MediaPipe FaceMesh, no extra weights):

- Landmarks: the 127 FaceMesh points the project's face tracker gives in frame pixels
  (:data:`~ditto_research.face.mediapipe_frontend.FACEMESH_CROP_POINTS`: eye contours, brows, nose, lips,
  lower face oval -- the regions of dlib's 68-point layout, denser). ``face`` = all 127 (F-LMD);
  ``mouth`` = the 40 lip-contour points of MediaPipe's ``FACEMESH_LIPS`` (:data:`MOUTH_POINTS`, outer and
  inner lip lines; M-LMD, dlib's 48-67). FaceMesh's other 351 points (cheek / forehead mesh, irises) are not
  handed out by the tracker and are left out.
- Units: pixels of the frame pair rescaled so that the *reference* face box (around all 478 FaceMesh
  points, longer side) is ``face_size`` = 256 pixels, per frame. Papers measure on face crops of a fixed
  size (typically 256); scaling by the face instead of resizing the frame keeps the number independent of
  the video resolution *and* of the framing (a 1920x1080 interview and a tight 512 crop of the same face
  give the same LMD). The scale comes from the reference only, so a generated face that is too small counts
  as an error instead of shrinking its own yardstick.
- No alignment: generated and reference frames share the head pose (same driving), so a head in the wrong
  place is an error, as in Chen et al. ``use_centring=True`` instead subtracts each landmark set's mean
  first (the LMD of the NeRF talking-head line, e.g. RAD-NeRF / ER-NeRF ``LMDMeter``): shape only.
- Pairing: frame ``t`` of one side with frame ``t`` of the other; the caller aligns the two sequences.
- Faces are tracked through each sequence (:class:`FaceTrack`). A pair where either side has no usable face
  is skipped and counted (:attr:`LandmarkDistance.frames_without_face`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from ditto_research.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ditto_research.face.frontend import FaceLandmarks
    from ditto_research.face.mediapipe_frontend import MediaPipeFrontend

__all__ = [
    "MOUTH_POINTS",
    "REFERENCE_FACE_SIZE",
    "FaceTrack",
    "LandmarkDistance",
    "PairDistance",
    "facemesh_rows",
    "landmark_distance",
    "mediapipe_frontend",
]

# MediaPipe's FaceLandmarksConnections.FACE_LANDMARKS_LIPS (the legacy FACEMESH_LIPS): the 40 points of its
# edges (outer lip line, corners 61 / 291 included, and inner lip line).
MOUTH_POINTS: tuple[int, ...] = (
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181,
    185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415,
)  # fmt: skip
REFERENCE_FACE_SIZE = 256.0  # pixels: the reference face box is rescaled to this longer side


def facemesh_rows(indices: Sequence[int]) -> list[int]:
    """Rows of :attr:`FaceLandmarks.points <ditto_research.face.frontend.FaceLandmarks>` (as the MediaPipe
    front-end returns them) that hold these FaceMesh indices."""
    from ditto_research.face.mediapipe_frontend import FACEMESH_CROP_POINTS

    missing = sorted(set(indices) - set(FACEMESH_CROP_POINTS))
    if missing:
        raise InputError(f"FaceMesh points {missing} are not among the front-end's tracked points")
    return [FACEMESH_CROP_POINTS.index(i) for i in indices]


def mediapipe_frontend(frontend: MediaPipeFrontend | None, user: str) -> tuple[MediaPipeFrontend, bool]:
    """``frontend`` checked to be a MediaPipe front-end, or a new one (the factory's defaults); and whether
    the caller made it (and so must close it). ``user`` names the caller in the error."""
    from ditto_research.face.factory import make_frontend
    from ditto_research.face.mediapipe_frontend import MediaPipeFrontend

    mesh = make_frontend("mediapipe", None) if frontend is None else frontend
    if not isinstance(mesh, MediaPipeFrontend):
        raise InputError(f"{user} needs a MediaPipe front-end, got {type(mesh).__name__}")
    return mesh, frontend is None


class FaceTrack:
    """One face followed through a sequence of frames with MediaPipe FaceMesh (a crop around the previous
    frame's face; detection again when it is lost).

    Several tracks may share one front-end: its FaceMesh graphs run in static-image mode, so the only state
    across frames is the ``previous`` face each track keeps.
    """

    def __init__(self, frontend: MediaPipeFrontend, channel_order: Literal["rgb", "bgr"] = "rgb") -> None:
        if channel_order not in ("rgb", "bgr"):
            raise InputError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.frontend = frontend
        self.channel_order = channel_order
        self.previous: FaceLandmarks | None = None

    def locate(self, frame: np.ndarray, what: str) -> FaceLandmarks | None:
        """The face in ``frame`` ((H, W, 3) uint8 in ``channel_order``): landmarks (127, 2) in frame pixels
        and box, or None when there is no usable face (none found, cut by the frame edge, a profile)."""
        image = np.asarray(frame)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"{what} must be an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        rgb = image if self.channel_order == "rgb" else np.ascontiguousarray(image[..., ::-1])
        try:
            self.previous = self.frontend.locate(rgb, self.previous, what=what)
        except InputError:  # no usable face in this frame
            self.previous = None
        return self.previous


class PairDistance(NamedTuple):
    """LMD of one frame pair, in units of a 256-pixel reference face (see the module docstring)."""

    mouth: float
    face: float


class LandmarkDistance:
    """Streaming M-LMD / F-LMD: :meth:`add` one (generated, reference) frame pair at a time.

    Args:
        frontend: a MediaPipe front-end to share (default: one is made here, and closed by :meth:`close`).
        channel_order: of the frames given to :meth:`add`.
        face_size: pixels the reference face box is rescaled to (the unit of the result).
        use_centring: subtract each landmark set's mean first (translation-free shape distance).
    """

    def __init__(
        self,
        frontend: MediaPipeFrontend | None = None,
        *,
        channel_order: Literal["rgb", "bgr"] = "rgb",
        face_size: float = REFERENCE_FACE_SIZE,
        use_centring: bool = False,
    ) -> None:
        if not face_size > 0:
            raise InputError(f"face_size must be positive pixels, got {face_size}")
        self.frontend, self._owned = mediapipe_frontend(frontend, "LandmarkDistance")
        self._pred = FaceTrack(self.frontend, channel_order)
        self._ref = FaceTrack(self.frontend, channel_order)
        self._mouth_rows = facemesh_rows(MOUTH_POINTS)
        self.face_size = float(face_size)
        self.use_centring = use_centring
        self.frames = 0  # pairs measured
        self.frames_without_face = 0  # pairs skipped: no usable face on either side
        self._sum = np.zeros(2)  # mouth, face
        self.last_pred: FaceLandmarks | None = None

    def add(self, pred_frame: np.ndarray, ref_frame: np.ndarray) -> PairDistance | None:
        """Measure the next pair (both (H, W, 3) uint8; sizes may differ); None when it is skipped."""
        index = self.frames + self.frames_without_face
        pred = self._pred.locate(pred_frame, f"generated frame {index}")
        ref = self._ref.locate(ref_frame, f"reference frame {index}")
        self.last_pred = pred  # the generated frame's face (or None), for other per-frame measures
        if pred is None or ref is None or ref.size <= 0:
            self.frames_without_face += 1
            return None
        scale = self.face_size / ref.size
        pred_points = pred.points.astype(np.float64) * scale
        ref_points = ref.points.astype(np.float64) * scale
        pair = PairDistance(
            self._distance(pred_points[self._mouth_rows], ref_points[self._mouth_rows]),
            self._distance(pred_points, ref_points),
        )
        self._sum += pair
        self.frames += 1
        return pair

    def _distance(self, pred: np.ndarray, ref: np.ndarray) -> float:
        """Mean Euclidean distance of corresponding rows of two (P, 2) point sets."""
        if self.use_centring:
            pred, ref = pred - pred.mean(0), ref - ref.mean(0)
        return float(np.linalg.norm(pred - ref, axis=1).mean())

    @property
    def mean_mouth(self) -> float:
        """M-LMD over the measured pairs (NaN when none)."""
        return float(self._sum[0] / self.frames) if self.frames else float("nan")

    @property
    def mean_face(self) -> float:
        """F-LMD over the measured pairs (NaN when none)."""
        return float(self._sum[1] / self.frames) if self.frames else float("nan")

    def close(self) -> None:
        """Close the front-end if this object made it."""
        if self._owned:
            self.frontend.close()

    def __enter__(self) -> LandmarkDistance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def landmark_distance(
    pred_frames: Sequence[np.ndarray] | np.ndarray,
    ref_frames: Sequence[np.ndarray] | np.ndarray,
    *,
    frontend: MediaPipeFrontend | None = None,
    channel_order: Literal["rgb", "bgr"] = "rgb",
    use_centring: bool = False,
) -> LandmarkDistance:
    """M-LMD / F-LMD of two equally long frame sequences; read ``mean_mouth``, ``mean_face``, ``frames`` and
    ``frames_without_face`` from the (closed) result."""
    if len(pred_frames) != len(ref_frames):
        raise InputError(
            f"LMD pairs frames one to one: got {len(pred_frames)} generated and {len(ref_frames)} reference "
            "frames; trim both to the same length first"
        )
    with LandmarkDistance(frontend, channel_order=channel_order, use_centring=use_centring) as lmd:
        for pred, ref in zip(pred_frames, ref_frames):
            lmd.add(pred, ref)
    return lmd
