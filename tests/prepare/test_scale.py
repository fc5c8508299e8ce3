"""The same list prepared three ways gives the same dataset: in this process, with prepare.workers=2, and as
two shards run by Hydra's submitit launcher (its local executor: separate processes, as on a cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ditto_research.data import PreparedDataset
from ditto_research.prepare.job import run_prepare
from tests.prepare.test_job import BASE, CLOSE_UP, INTERVIEW, config, ffmpeg

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CLOSE_UP.is_file() and INTERVIEW.is_file()), reason="real clips not present"),
]


def app(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ditto_research.prepare", *args, *BASE],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )


def test_workers_and_shards_make_the_dataset_one_process_makes(tmp_path):
    ffmpeg("-t", "4", "-i", str(CLOSE_UP), "-c:v", "libx264", "-crf", "18", str(tmp_path / "a.mp4"))
    ffmpeg("-t", "4", "-i", str(INTERVIEW), "-vf", "scale=640:-2", "-c:v", "libx264", str(tmp_path / "b.mp4"))
    ffmpeg("-t", "4", "-i", str(CLOSE_UP), "-vf", "hflip", "-c:v", "libx264", str(tmp_path / "c.mp4"))
    listing = tmp_path / "list.txt"
    listing.write_text("a.mp4\nb.mp4\nc.mp4\n")
    summary = run_prepare(config(listing, tmp_path / "one"))
    assert summary.clips == 3

    workers = app(f"videos={listing}", f"out={tmp_path / 'workers'}", "prepare.workers=2", cwd=tmp_path)
    assert workers.returncode == 0, workers.stderr[-3000:]
    shards = app(
        "-m",
        f"videos={listing}",
        f"out={tmp_path / 'shards'}",
        "prepare.shard=0/2,1/2",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert shards.returncode == 0, shards.stderr[-3000:]
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert sorted(map(tuple, manifest["shards"])) == [
        (0, 2),
        (1, 2),
    ]  # both parts merged, whichever ended last

    reference = PreparedDataset(tmp_path / "one")
    for name in ("workers", "shards"):
        other = PreparedDataset(tmp_path / name)
        assert [e["id"] for e in other.entries] == [e["id"] for e in reference.entries], name
        for ours, theirs in zip(reference, other):
            for key in ours:
                np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{name} {ours.clip_id} {key}")


def test_both_real_clips_whole_with_their_mirrored_copies(tmp_path):
    """The two real clips end to end (1080p 16:9 and 412x454): frames = duration x 25, eye features from
    real landmarks varying over each clip, flip doubling the clips and mirroring eye_ball's x component."""
    listing = tmp_path / "list.txt"
    listing.write_text(f"{CLOSE_UP}\n{INTERVIEW}\n")
    summary = run_prepare(config(listing, tmp_path / "ds", "prepare.flip=true"))
    assert summary.kept == 2 and summary.clips == 4
    dataset = PreparedDataset(tmp_path / "ds")
    by_id = {clip.clip_id: clip for clip in dataset}
    from ditto_research.prepare.job import _clip_stem

    for stem, frames in (("-1wCGAxqT_4+000000_000177+p0", 178), ("Clip+WSGW-7gHS6A+P0+C1+F2551-2669", 160)):
        original, mirrored = by_id[f"{_clip_stem(stem)}_f000000"], by_id[f"{_clip_stem(stem)}_f000000_flip"]
        assert original.frames == mirrored.frames == frames  # 7.12 s and 6.4 s of 25 fps video
        assert original["eye_open"].std(axis=0).min() > 1e-3
        x, x_mirrored = original["eye_ball"][:, 0, :], mirrored["eye_ball"][:, 0, :]
        assert np.corrcoef(-x[:, ::-1].ravel(), x_mirrored.ravel())[0, 1] > 0.8, stem
        assert mirrored.meta["flipped"] and not original.meta["flipped"]
