"""Third-party log noise: quiet unless ``verbose=true``.

LiteRT (the face=mediapipe networks) and MediaPipe's C++ (absl logging: the official chain's FaceLandmarker)
write INFO / WARNING lines straight to file descriptor 2 when a network or graph is built and first run::

    INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    W0000 00:00:1796171656.871179    8009 inference_feedback_manager.cc:114] Feedback manager requires ...
    W0000 00:00:1796171656.921077    8009 landmark_projection_calculator.cc:186] Using NORM_RECT without ...

The usual switches do not reach them: absl's C++ library reads no environment variable
(``GLOG_minloglevel`` / ``TF_CPP_MIN_LOG_LEVEL`` were tried with mediapipe 0.10.21 and change nothing), and
neither binding exposes a log level. :func:`configure_logging` still sets those variables (builds that
honour them stay quiet) and absl-py's level; :func:`quiet_native_logs` then holds back fd 2 around the few
native calls that log (loading the networks) and writes back everything that is not one of those INFO /
WARNING lines, so errors, and anything our own code printed meanwhile, still come out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["configure_logging", "is_native_noise", "quiet_native_logs"]

# absl / glog prefix of an INFO or WARNING line ("W0000 00:00:1796171656.871179    8009 file.cc:114] ...";
# before absl::InitializeLog the seconds field counts from the epoch), and TF Lite's minimal-logging INFO
# lines. Error (E) and fatal (F) lines never match.
_NATIVE_NOISE = re.compile(
    r"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\]]+\] "
    r"|INFO: "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)

# fd 2 is one per process: two threads building front-ends must not swap it under each other. A lock is the
# only module-level object here; it holds no data.
_STDERR_LOCK = threading.RLock()


def configure_logging(verbose: bool) -> None:
    """Quiet the third-party loggers (``verbose=False``) or let everything through, ours at DEBUG (``True``).

    Call it once at start-up, before mediapipe is imported: the environment variables below are read at
    import. Safe to call again (the front-ends do); with ``verbose=False`` our own loggers keep their level.
    """
    if not verbose:
        # Read by glog / TensorFlow builds at import (2: warnings and info off, errors kept).
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from absl import logging as absl_logging
    except ImportError:  # absl-py comes with mediapipe; without it there is nothing to quiet
        pass
    else:
        absl_logging.set_verbosity(absl_logging.DEBUG if verbose else absl_logging.ERROR)
    if verbose:
        logging.getLogger("ditto_research").setLevel(logging.DEBUG)


def is_native_noise(line: str) -> bool:
    """Whether ``line`` is a native INFO / WARNING line that :func:`quiet_native_logs` holds back."""
    return _NATIVE_NOISE.match(line) is not None


@contextlib.contextmanager
def quiet_native_logs(verbose: bool = False) -> Iterator[None]:
    """Inside the block, fd 2 goes to a temporary file; on exit every captured line that is not native
    INFO / WARNING noise (:func:`is_native_noise`) is written to the real stderr. ``verbose=True``: no-op.

    Exceptions pass through unchanged (the traceback is printed after fd 2 is back). Other threads writing
    to stderr meanwhile are delayed, not lost.
    """
    if verbose:
        yield
        return
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (a daemon with stderr closed): nothing to hold back
            yield
            return
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if not is_native_noise(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
