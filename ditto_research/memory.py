"""Peak resident memory of this process, the one definition every report uses (CLI summary, benchmarks,
evaluation)."""

from __future__ import annotations

import resource
import sys

__all__ = ["peak_rss_mb", "reset_peak_rss"]


def reset_peak_rss() -> bool:
    """Restart the process's peak-RSS counter (Linux ``clear_refs``); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory (MB) since the last :func:`reset_peak_rss`, else since the process started.

    Linux: ``VmHWM`` of /proc/self/status (``ru_maxrss`` would also count a program this process replaced by
    exec, and cannot be reset); elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
