"""One acceptance policy for every face front-end: a face cut by the frame edge or turned to the side is
refused in one line by MediaPipe (its default) and by the official chain with ``face.reject_unusable=true``
(off by default there, as the original animates whatever it finds). MediaPipe's cases: test_detection.py."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_research.config import compose, to_config
from ditto_research.errors import InputError
from ditto_research.face.factory import make_frontend
from ditto_research.face.frontend import MAX_SIDE_TURN, check_not_profile, side_turn
from tests.helpers import synthetic_landmarks


def face478(turn: float) -> np.ndarray:
    """(1, 478, 3) normalised crop points whose cheeks (234, 454) and nose tip (1) make a face turned by
    ``turn`` half face widths, rotated in the image plane by 30 degrees."""
    points = np.full((478, 3), 0.5, np.float32)
    points[234, :2], points[454, :2] = (0.3, 0.5), (0.7, 0.5)
    points[1, :2] = (0.5 + 0.2 * turn, 0.55)
    angle = np.deg2rad(30.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    points[:, :2] = (points[:, :2] - 0.5) @ rotation.T + 0.5
    return points[None]


def test_side_turn_measures_half_face_widths_whatever_the_rotation():
    for turn in (0.0, 0.5, -1.2):
        assert side_turn(face478(turn)[0]) == pytest.approx(turn, abs=1e-5)
    check_not_profile(face478(0.7)[0], "ok.png")
    with pytest.raises(InputError, match=r"the face in side.png is turned to the side \(a profile: its nose"):
        check_not_profile(face478(-(MAX_SIDE_TURN + 0.1))[0], "side.png")


def cut_face_file(tmp_path) -> str:
    """A landmark file whose face box runs 40 % off the left edge of a 640x480 image."""
    arrays = synthetic_landmarks(center=(30.0, 240.0), size=150.0)
    np.savez(tmp_path / "cut.npz", **arrays)
    return str(tmp_path / "cut.npz")


@pytest.mark.parametrize("reject", [None, False, True])
def test_the_official_chain_applies_the_policy_only_when_asked(tmp_path, reject):
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    frontend = make_frontend("given", None, landmarks=cut_face_file(tmp_path), reject_unusable=reject)
    with frontend:
        if reject:
            with pytest.raises(InputError, match="the face in cut.png is cut by the frame edge"):
                frontend.locate(image, what="cut.png")
            with pytest.raises(InputError, match="side.png is turned to the side"):
                frontend.check_registered_face(face478(1.5), what="side.png")
            frontend.check_registered_face(face478(0.1), what="front.png")
        else:  # the original's behaviour (parity): the face is animated
            assert frontend.locate(image, what="cut.png").num_faces == 1
            frontend.check_registered_face(face478(1.5), what="side.png")


def test_the_config_key_reaches_the_front_end(tmp_path):
    from ditto_research.pipeline.engine import Engine

    base = ["model=tiny", "face=given", f"face.landmarks={cut_face_file(tmp_path)}"]
    assert to_config(compose("infer", base)).face.reject_unusable is None
    for value, expected in (("true", True), ("false", False), ("null", False)):
        engine = Engine(to_config(compose("infer", [*base, f"face.reject_unusable={value}"])))
        try:
            assert engine.frontend.reject_unusable is expected
        finally:
            engine.close()
    mediapipe = Engine(to_config(compose("infer", ["model=tiny", "face=mediapipe"])))
    try:
        assert mediapipe.frontend.reject_unusable is True
    finally:
        mediapipe.close()


def test_registration_refuses_a_profile_from_the_official_chain(tmp_path):
    """Through the pipeline: face=given with the policy on refuses a profile at registration, in one line."""
    import cv2

    from ditto_research.pipeline.engine import Engine

    arrays = synthetic_landmarks(center=(320.0, 240.0), size=150.0)
    arrays["lmk478"] = face478(1.5)[None]
    np.savez(tmp_path / "side.npz", **arrays)
    image = tmp_path / "side.png"
    cv2.imwrite(str(image), np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    overrides = ["model=tiny", "face=given", f"face.landmarks={tmp_path / 'side.npz'}"]
    strict = Engine(to_config(compose("infer", [*overrides, "face.reject_unusable=true"])))
    try:
        with pytest.raises(InputError, match="side.png is turned to the side"):
            strict.register(image)
    finally:
        strict.close()
    lenient = Engine(to_config(compose("infer", overrides)))
    try:
        lenient.register(image).media.close()
    finally:
        lenient.close()
