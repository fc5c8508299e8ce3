"""Output reservations and the cleanup of what killed runs left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ditto_research.errors import InputError
from ditto_research.media.output_files import (
    process_alive,
    remove_stale_temporaries,
    reserve_output,
    temp_name,
)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not process_alive(proc.pid)
    return proc.pid


def test_a_reservation_is_exclusive_and_released(tmp_path):
    out = tmp_path / "clip.mp4"
    held = reserve_output(out, overwrite=False)
    lock = tmp_path / ".clip.mp4.lock"
    assert lock.read_text() == str(os.getpid())
    shared = reserve_output(out, overwrite=False)  # the same process (the CLI, then its writer): shared
    shared.release()
    assert lock.exists()
    held.release()
    assert not lock.exists()


def test_another_live_run_is_refused_and_a_dead_ones_lock_is_taken(tmp_path):
    out = tmp_path / "clip.mp4"
    lock = tmp_path / ".clip.mp4.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.write_text(str(sleeper.pid))
        with pytest.raises(InputError, match=f"being written by another run .process {sleeper.pid}."):
            reserve_output(out, overwrite=False)
    finally:
        sleeper.kill()
        sleeper.wait()
    lock.write_text(str(_dead_pid()))
    with reserve_output(out, overwrite=False):
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


def test_existing_outputs_and_folders(tmp_path):
    (tmp_path / "taken.mp4").write_bytes(b"keep")
    with pytest.raises(InputError, match="taken.mp4 already exists; pass overwrite=true"):
        reserve_output(tmp_path / "taken.mp4", overwrite=False)
    assert not (tmp_path / ".taken.mp4.lock").exists()
    reserve_output(tmp_path / "taken.mp4", overwrite=True).release()
    with pytest.raises(InputError, match="is a folder; give a file name"):
        reserve_output(tmp_path, overwrite=True)


def test_only_our_stale_temporaries_of_dead_runs_are_removed(tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f".a.{dead}-0123456789ab.video.mp4", tmp_path / f".b.{dead}-0123456789ab.part.mp4"]
    stale_lock = tmp_path / ".a.mp4.lock"
    live = tmp_path / f".c.{os.getpid()}-0123456789ab.video.mp4"  # ours, alive: kept
    foreign = [tmp_path / ".a.video.mp4", tmp_path / "a.mp4", tmp_path / f".x.{dead}-zz.video.mp4"]
    for path in (*stale, live, *foreign):
        path.write_bytes(b"x")
    stale_lock.write_text(str(dead))
    fresh = tmp_path / f".d.{dead}-0123456789ab.video.mp4"  # newer than the run: left alone
    removed = remove_stale_temporaries(tmp_path, started=time.time())
    fresh.write_bytes(b"x")
    assert sorted(removed) == sorted([*stale, stale_lock])
    assert all(p.exists() for p in (live, *foreign, fresh))
    assert temp_name(tmp_path / "clip.mp4", "video", "0123456789ab").name == (
        f".clip.{os.getpid()}-0123456789ab.video.mp4"
    )
