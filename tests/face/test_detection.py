"""Finding faces in everyday frames: the tile pyramid, confirmation, selection and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from ditto_research.errors import InputError
from ditto_research.evaluate.face_set import build_face_set, references, score_case
from ditto_research.face.frontend import side_turn
from ditto_research.face.mediapipe_detect import TileDetectorSettings, nms_boxes, pyramid_tiles
from ditto_research.face.mediapipe_frontend import MediaPipeFrontend


@pytest.fixture(scope="module")
def frontend():
    f = MediaPipeFrontend(min_face_size=0)
    yield f
    f.close()


@pytest.fixture(scope="module")
def refs(frontend):
    return references(frontend)


@pytest.mark.parametrize(("height", "width", "min_face"), [(1080, 1920, 24), (720, 1280, 32), (512, 512, 64)])
def test_every_face_size_fits_whole_in_a_tile_of_its_level(height, width, min_face):
    settings = TileDetectorSettings()
    levels = list(pyramid_tiles(height, width, min_face, settings))
    assert levels[0][0][2] == min(height, width)
    last = levels[-1][0][2]  # fine enough for min_face (or as fine as the detector's input allows)
    assert last * settings.min_ratio <= min_face or last // 2 < settings.input_size // 4
    rng = np.random.default_rng(0)
    for tiles in levels:
        side = tiles[0][2]
        covered = np.zeros((height, width), bool)
        for y, x, s in tiles:
            covered[y : y + s, x : x + s] = True
        assert covered.all()
        # A face up to 0.3 of the side (larger ones belong to the coarser level) lies whole in some tile.
        face = int(0.3 * side)
        for _ in range(50):
            fy, fx = rng.integers(0, height - face + 1), rng.integers(0, width - face + 1)
            assert any(y <= fy and x <= fx and fy + face <= y + s and fx + face <= x + s for y, x, s in tiles)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10, 0.6], [1, 1, 11, 11, 0.9], [50, 50, 60, 60, 0.7]], float)
    kept = nms_boxes(boxes, 0.3)
    assert kept[:, 4].tolist() == [0.9, 0.7]
    assert nms_boxes(np.zeros((0, 5)), 0.3).shape == (0, 5)


def test_real_faces_in_video_frames_are_found(frontend, refs):
    """A quick slice of the face set (docs/face_detection.md has all of it): 64 to 400 pixel faces in a
    1920x1080 frame, rotated 30 degrees, mirrored, and two people (the larger is chosen)."""
    cases = build_face_set(refs, quick=True)
    assert len(cases) >= 10
    misses = []
    for case in cases:
        score = score_case(case, frontend.locate(case.image, what=case.name))
        if not score.hit:
            misses.append((case.name, score))
    assert misses == []


def test_select_picks_largest_center_or_by_position(refs):
    case = next(c for c in build_face_set(refs, quick=True) if c.name.startswith("two people"))
    left, right = sorted(case.faces, key=lambda f: f.anchors[:, 0].mean())
    picked = {}
    for select in ("largest", "center", 0, 1):
        with MediaPipeFrontend(min_face_size=0, select=select) as frontend:
            located = frontend.locate(case.image, what=case.name)
            assert located.num_faces == 2
            picked[select] = located.points[:10].mean(axis=0)
    near = lambda p, face: np.linalg.norm(p - face.anchors.mean(axis=0)) < 10  # noqa: E731
    assert near(picked["largest"], case.target) and near(picked[0], left) and near(picked[1], right)
    assert near(picked["center"], min(case.faces, key=lambda f: abs(f.anchors[:, 0].mean() - 512)))
    with (
        MediaPipeFrontend(select=2) as frontend,
        pytest.raises(InputError, match="asks for face 2 .* has 2 face"),
    ):
        frontend.locate(case.image, what="two.png")


def test_profiles_and_cut_faces_are_refused_in_one_line(frontend):
    camera = np.repeat(data.camera()[..., None], 3, axis=2)  # a real face, seen from the side
    with pytest.raises(InputError, match="camera.png is turned to the side"):
        frontend.locate(camera, what="camera.png")
    cut = np.ascontiguousarray(data.astronaut()[:, 210:510])  # the face runs off the left edge
    with pytest.raises(InputError, match="cut.png is cut by the frame edge"):
        frontend.locate(cut, what="cut.png")
    with pytest.raises(InputError, match="no face found in sky.png"):
        frontend.locate(np.full((480, 640, 3), 200, np.uint8), what="sky.png")
    with MediaPipeFrontend(reject_unusable=False) as lenient:  # face.reject_unusable=false: animate them
        assert lenient.locate(camera, what="camera.png").num_faces == 1
        assert lenient.locate(cut, what="cut.png").num_faces == 1


def test_side_turn_is_zero_for_frontal_faces(frontend):
    face = frontend.detect(data.astronaut())[0]
    assert abs(side_turn(face.pixels)) < 0.15
    mirrored = frontend.detect(np.ascontiguousarray(data.astronaut()[:, ::-1]))[0]
    assert abs(side_turn(mirrored.pixels)) < 0.15


def test_video_tracking_follows_the_face_and_detects_again_when_lost(frontend, refs):
    """Frames of a 16:9 clip: the face moves (tracked on a crop around the last box), disappears (no face),
    and comes back elsewhere (detected again)."""
    from ditto_research.evaluate.face_set import FaceCase, _background, _place

    def frame(center):
        canvas = _background(720, 1280)
        placed = _place(canvas, refs[0], 150, center) if center is not None else None
        return FaceCase("clip", canvas, [placed] if placed else [])

    first = frame((400, 360))
    previous = frontend.locate(first.image, what="frame 0")
    moved = frame((430, 370))
    tracked = frontend.locate(moved.image, previous, what="frame 1")
    assert tracked.num_faces == 1 and score_case(moved, tracked).hit
    with pytest.raises(InputError, match="no face found in frame 2"):
        frontend.locate(frame(None).image, tracked, what="frame 2")
    jumped = frame((1000, 300))
    again = frontend.locate(jumped.image, tracked, what="frame 3")
    assert score_case(jumped, again).hit
