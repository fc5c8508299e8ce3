"""Third-party log noise: MediaPipe's native INFO / WARNING lines are held back unless verbose, errors
never."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from ditto_research.logs import configure_logging, is_native_noise, quiet_native_logs

# What mediapipe 0.10.21 prints when a FaceMesh is built and runs its first frame.
NOISE = (
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "W0000 00:00:1796171656.871179    8009 inference_feedback_manager.cc:114] Feedback manager requires a "
    "model with a single signature inference. Disabling support for feedback tensors.",
    "W0000 00:00:1796171656.921077    8009 landmark_projection_calculator.cc:186] Using NORM_RECT without "
    "IMAGE_DIMENSIONS is only supported for the square ROI.",
    "I0101 12:00:00.000001    77 gl_context.cc:357] GL version: 3.2",
)
KEPT = (
    "E0000 00:00:1796171656.921077    8009 calculator_graph.cc:887] INTERNAL: model failed to load",
    "ERROR: failed to allocate tensors",
    "error: source image not found",
    "Traceback (most recent call last):",
)
MARKERS = (
    "XNNPACK delegate",
    "absl::InitializeLog",
    "inference_feedback_manager",
    "landmark_projection_calculator",
)


@pytest.mark.parametrize("line", NOISE)
def test_native_info_and_warnings_are_noise(line: str) -> None:
    assert is_native_noise(line)


@pytest.mark.parametrize("line", KEPT)
def test_errors_and_our_own_lines_are_not_noise(line: str) -> None:
    assert not is_native_noise(line)


def test_quiet_block_drops_noise_and_writes_back_the_rest(capfd: pytest.CaptureFixture[str]) -> None:
    with quiet_native_logs():
        os.write(2, ("\n".join(NOISE + KEPT) + "\n").encode())
        print("from python", file=sys.stderr)
    err = capfd.readouterr().err
    # Under capfd, sys.stderr is pytest's own object, not fd 2, so only the set of lines is comparable.
    assert sorted(err.splitlines()) == sorted([*KEPT, "from python"])


def test_quiet_block_passes_exceptions_and_restores_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError, match="boom"), quiet_native_logs():
        os.write(2, f"{NOISE[2]}\nkept before the error\n".encode())
        raise RuntimeError("boom")
    os.write(2, b"after the block\n")
    assert capfd.readouterr().err.splitlines() == ["kept before the error", "after the block"]


def test_verbose_lets_everything_through(capfd: pytest.CaptureFixture[str]) -> None:
    with quiet_native_logs(verbose=True):
        os.write(2, f"{NOISE[0]}\n".encode())
    assert capfd.readouterr().err.splitlines() == [NOISE[0]]


def test_configure_logging_sets_the_native_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    from absl import logging as absl_logging

    for key in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL"):
        monkeypatch.delenv(key, raising=False)
    before = absl_logging.get_verbosity()
    try:
        configure_logging(verbose=False)
        assert os.environ["GLOG_minloglevel"] == "2" and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
        assert absl_logging.get_verbosity() == absl_logging.ERROR
    finally:
        absl_logging.set_verbosity(before)


_FRONTEND_SCRIPT = textwrap.dedent(
    """
    import sys
    from skimage import data
    from ditto_research.face.factory import make_frontend

    image = data.astronaut()
    with make_frontend("mediapipe", None, verbose=sys.argv[1] == "verbose") as frontend:
        face = frontend.locate(image)
        frontend.locate(image, face)  # the video-mode tracker: a second FaceMesh
        print("faces", face.num_faces)
    """
)


def _build_frontend(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _FRONTEND_SCRIPT, mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_mediapipe_frontend_is_quiet_by_default() -> None:
    proc = _build_frontend("quiet")
    assert proc.returncode == 0 and "faces 1" in proc.stdout, proc.stderr
    assert not [m for m in MARKERS if m in proc.stderr], proc.stderr


def test_mediapipe_frontend_verbose_shows_native_logs() -> None:
    proc = _build_frontend("verbose")
    assert proc.returncode == 0 and "faces 1" in proc.stdout, proc.stderr
    if not proc.stderr.strip():
        pytest.skip("this mediapipe build logs nothing on its own")
    assert any(m in proc.stderr for m in MARKERS), proc.stderr
