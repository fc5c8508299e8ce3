"""A face-detection test set built from photos already on the machine, with known ground truth.

Real portraits that ship with installed packages (scikit-image's astronaut, matplotlib's Grace Hopper) are
placed into the frames people actually give: 16:9 video frames (1920x1080, 1280x720) at face sizes from 64 to
400 pixels and several positions, rotated, mirrored, and two or three people side by side at different sizes.
Each placement is a known similarity transform, so the true eye and mouth anchors in the frame are the ones
found on the tight portrait, mapped through it.

    cases = build_face_set(references(frontend))         # list[FaceCase]
    result = score_case(case, frontend.locate(case.image)) # found / right face / anchor error

Recall counts a case when the chosen face is the intended one (the largest) and its 10 anchors (eye corners,
lids, lip corners) lie within ``max(3 px, 3 % of the face height)`` of the truth on average.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["FaceCase", "PortraitReference", "build_face_set", "portrait_photos", "references", "score_case"]

ANCHOR_ROWS = slice(0, 10)  # crop-landmark rows of the eye corners / lids and lip corners (both front-ends)


@dataclass(frozen=True)
class PortraitReference:
    """A portrait photo, its face box and the anchors found on it (pixels of ``image``)."""

    name: str
    image: np.ndarray
    box: np.ndarray  # (4,) x1, y1, x2, y2
    anchors: np.ndarray  # (10, 2)

    @property
    def face_height(self) -> float:
        return float(self.box[3] - self.box[1])


@dataclass(frozen=True)
class PlacedFace:
    reference: str
    matrix: np.ndarray  # (2, 3) portrait pixels -> frame pixels
    face_height: float  # pixels in the frame
    anchors: np.ndarray  # (10, 2) true anchors in the frame


@dataclass(frozen=True)
class FaceCase:
    name: str
    image: np.ndarray
    faces: list[PlacedFace] = field(default_factory=list)

    @property
    def target(self) -> PlacedFace:
        """The face the default selection (largest) should pick."""
        return max(self.faces, key=lambda f: f.face_height)


def portrait_photos() -> dict[str, np.ndarray]:
    """The real portraits on this machine: scikit-image's astronaut, matplotlib's Grace Hopper (RGB)."""
    from skimage import data

    photos = {"astronaut": data.astronaut()}
    try:
        from matplotlib import cbook

        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        photos["grace_hopper"] = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    except (ImportError, OSError):  # matplotlib comes with mediapipe; without it the set is smaller
        pass
    return photos


def references(frontend, photos: dict[str, np.ndarray] | None = None) -> list[PortraitReference]:
    """Locate the face on each tight portrait with ``frontend`` (the ground truth's anchors)."""
    out = []
    for name, image in (photos or portrait_photos()).items():
        face = frontend.locate(image, what=name)
        out.append(PortraitReference(name, image, face.box.copy(), face.points[ANCHOR_ROWS].copy()))
    return out


def _similarity(
    center_src: np.ndarray, center_dst: np.ndarray, scale: float, angle: float, mirror: bool
) -> np.ndarray:
    """(2, 3): mirror about the source centre (optional), rotate by ``angle`` degrees, scale, move."""
    flip = np.diag([-1.0 if mirror else 1.0, 1.0])
    theta = np.deg2rad(angle)
    rotation = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    linear = scale * rotation @ flip
    return np.hstack([linear, (center_dst - linear @ center_src)[:, None]])


def _background(height: int, width: int) -> np.ndarray:
    """A textured backdrop: scikit-image's rocket scene stretched to the frame, dimmed (no faces in it)."""
    from skimage import data

    scene = cv2.resize(data.rocket(), (width, height), interpolation=cv2.INTER_LINEAR)
    return (scene.astype(np.float32) * 0.6 + 40.0).astype(np.uint8)


def _place(
    canvas: np.ndarray,
    ref: PortraitReference,
    height: float,
    center: tuple[float, float],
    angle: float = 0.0,
    mirror: bool = False,
) -> PlacedFace:
    """Paste the portrait's head (2.4x its face box) into ``canvas`` with its face ``height`` pixels tall and
    centred at ``center``; returns the ground truth."""
    scale = height / ref.face_height
    face_center = np.array([(ref.box[0] + ref.box[2]) / 2, (ref.box[1] + ref.box[3]) / 2])
    matrix = _similarity(face_center, np.asarray(center, np.float64), scale, angle, mirror)
    frame_h, frame_w = canvas.shape[:2]
    warped = cv2.warpAffine(
        ref.image, matrix, (frame_w, frame_h), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    # The head region: an ellipse 2.4 face-heights tall around the face, feathered.
    mask = np.zeros((frame_h, frame_w), np.float32)
    axes = (int(1.0 * height), int(1.3 * height))
    cv2.ellipse(mask, (int(center[0]), int(center[1] + 0.15 * height)), axes, angle, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.05 * height))[..., None]
    canvas[:] = (warped * mask + canvas * (1 - mask)).astype(np.uint8)
    anchors = ref.anchors.copy()
    if mirror:  # the mirrored face's left eye is the original's right eye: rows come in eye-A / eye-B pairs
        anchors = anchors[[4, 5, 6, 7, 0, 1, 2, 3, 9, 8]]
    anchors = anchors @ matrix[:, :2].T + matrix[:, 2]
    return PlacedFace(ref.name, matrix, height, anchors.astype(np.float32))


def build_face_set(refs: Iterable[PortraitReference], *, quick: bool = False) -> list[FaceCase]:
    """The cases (see the module docstring); ``quick``: a handful for the default test suite."""
    refs = list(refs)
    cases: list[FaceCase] = []

    def case(name: str, size: tuple[int, int], placements: list[tuple]) -> None:
        canvas = _background(*size)
        faces = [_place(canvas, ref, *args) for ref, *args in placements]
        cases.append(FaceCase(name, canvas, faces))

    heights = (64, 96, 128, 192, 256, 400) if not quick else (64, 192, 400)
    for ref in refs:
        for frame in ((1080, 1920), (720, 1280)) if not quick else ((1080, 1920),):
            fh, fw = frame
            spots = {
                "center": (fw / 2, fh / 2),
                "left": (fw * 0.25, fh * 0.45),
                "top-right": (fw * 0.8, fh * 0.3),
            }
            for height in heights:
                if height * 1.5 > fh:
                    continue
                for spot, center in spots.items() if not quick else [("left", spots["left"])]:
                    case(f"{ref.name} {fw}x{fh} {height}px {spot}", frame, [(ref, height, center)])
        for angle in (-30, -15, 15, 30) if not quick else (30,):
            case(f"{ref.name} 1920x1080 192px rotated {angle}", (1080, 1920), [(ref, 192, (900, 520), angle)])
        case(f"{ref.name} 1920x1080 192px mirrored", (1080, 1920), [(ref, 192, (1100, 500), 0.0, True)])
    if len(refs) >= 1:
        a, b = refs[0], refs[-1]
        case("two people 1024x512 (170 / 120 px)", (512, 1024), [(a, 170, (300, 250)), (b, 120, (760, 260))])
        if not quick:
            case(
                "three people 1920x1080 (220 / 150 / 100 px)",
                (1080, 1920),
                [(b, 150, (420, 500)), (a, 220, (1000, 480)), (a, 100, (1550, 560), 0.0, True)],
            )
            case(
                "two people 1280x720 (100 / 260 px)",
                (720, 1280),
                [(a, 100, (250, 300)), (b, 260, (850, 380))],
            )
    return cases


@dataclass(frozen=True)
class CaseScore:
    found: bool
    right_face: bool
    anchor_error_px: float
    tolerance_px: float

    @property
    def hit(self) -> bool:
        return self.found and self.right_face and self.anchor_error_px <= self.tolerance_px


def score_case(case: FaceCase, located) -> CaseScore:
    """Compare a located face (``FaceLandmarks`` or None when none was found) with the case's target."""
    target = case.target
    tolerance = max(3.0, 0.03 * target.face_height)
    if located is None:
        return CaseScore(False, False, float("inf"), tolerance)
    anchors = located.points[ANCHOR_ROWS]
    error = float(np.linalg.norm(anchors - target.anchors, axis=1).mean())
    # The right face: its anchors are nearer this face's truth than any other placed face's.
    errors = [float(np.linalg.norm(anchors - f.anchors, axis=1).mean()) for f in case.faces]
    return CaseScore(True, int(np.argmin(errors)) == case.faces.index(target), error, tolerance)
