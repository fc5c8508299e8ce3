"""Prepared datasets on disk: clip files and manifest written atomically, read back equal, refused in one line
when they are of another format version or malformed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ditto_research.data import (
    CLIP_ARRAYS,
    DatasetWriter,
    PreparedClip,
    PreparedDataset,
    load_clip,
    save_clip,
)
from ditto_research.data.dataset import MANIFEST
from ditto_research.errors import InputError


def make_clip(clip_id: str = "talk_000", frames: int = 90, seed: int = 0) -> PreparedClip:
    rng = np.random.default_rng(seed)
    arrays = {
        name: rng.standard_normal((frames, *tail)).astype(np.float32) for name, tail in CLIP_ARRAYS.items()
    }
    meta = {"source": "talk.mp4", "segment": [0, frames], "fps": 25.0, "emotion_source": "none"}
    meta["flipped"] = False
    return PreparedClip(clip_id, arrays, meta)


def test_clips_round_trip_through_the_dataset(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", {"model": "tiny", "config_hash": "abc"})
    clips = [make_clip("a", 90, 0), make_clip("b", 120, 1)]
    for clip in clips:
        writer.add(clip)
    assert writer.has("a") and not writer.has("c")
    dataset = PreparedDataset(tmp_path / "ds")
    assert len(dataset) == 2 and dataset.total_frames == 210 and dataset.config["model"] == "tiny"
    for ours, back in zip(clips, dataset):
        assert back.clip_id == ours.clip_id and back.meta == ours.meta and set(back) == set(CLIP_ARRAYS)
        for name in CLIP_ARRAYS:
            np.testing.assert_array_equal(back[name], ours[name])
            assert not back[name].flags.writeable
    assert dataset.entries[1] == {
        "id": "b",
        "file": "clips/b.npz",
        "frames": 120,
        "source_id": "b",
        **clips[1].meta,
    }
    resumed = DatasetWriter(tmp_path / "ds", {"model": "tiny"})  # a rerun knows what is finished
    assert resumed.has("a") and resumed.has("b")
    with pytest.raises(InputError, match="clip b is already in"):
        resumed.add(make_clip("b"))
    assert sorted(p.name for p in (tmp_path / "ds").rglob("*")) == [
        ".lock",
        "a.npz",
        "b.npz",
        "clips",
        MANIFEST,
        "parts",
        "shard-00000-of-00001.json",
    ]


def test_a_write_that_fails_leaves_neither_file_nor_entry(tmp_path, monkeypatch):
    writer = DatasetWriter(tmp_path / "ds", {})
    real = np.savez

    def dies_halfway(file, **arrays):
        real(file, **arrays)
        raise KeyboardInterrupt  # the job is stopped while the clip is being written

    monkeypatch.setattr(np, "savez", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        writer.add(make_clip("a"))
    monkeypatch.setattr(np, "savez", real)
    assert list((tmp_path / "ds" / "clips").iterdir()) == []
    assert len(PreparedDataset(tmp_path / "ds")) == 0 and not writer.has("a")
    writer.add(make_clip("a"))
    assert len(PreparedDataset(tmp_path / "ds")) == 1


def test_another_format_version_is_refused_in_one_line(tmp_path):
    DatasetWriter(tmp_path / "ds", {}).add(make_clip())
    manifest = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    manifest["version"] = 99
    (tmp_path / "ds" / MANIFEST).write_text(json.dumps(manifest))
    for make in (PreparedDataset, lambda folder: DatasetWriter(folder, {})):
        with pytest.raises(InputError, match=r"has format version 99, and this ditto_research reads version"):
            make(tmp_path / "ds")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "does not exist; give the folder of a prepared dataset"),
        (lambda d: d.mkdir(), r"is not a prepared dataset \(no manifest.json\)"),
        (lambda d: (d.mkdir(), (d / MANIFEST).write_text("{not json")), "cannot be read"),
        (lambda d: (d.mkdir(), (d / MANIFEST).write_text('{"format": "x"}')), "is not a manifest"),
    ],
)
def test_what_is_not_a_dataset(tmp_path, setup, message):
    setup(tmp_path / "ds")
    with pytest.raises(InputError, match=message):
        PreparedDataset(tmp_path / "ds")


def test_bad_clips_name_the_file_key_and_shape(tmp_path):
    arrays = dict(make_clip().arrays)
    with pytest.raises(InputError, match=r"'eye_ball' is \(90, 6\) float32; expected \(90, 3, 2\) float"):
        PreparedClip("x", {**arrays, "eye_ball": arrays["eye_ball"].reshape(90, 6)})
    with pytest.raises(InputError, match=r"'emotion' is \(89, 8\)"):
        PreparedClip("x", {**arrays, "emotion": arrays["emotion"][:89]})
    with pytest.raises(InputError, match="has no 'motion' array"):
        PreparedClip("x", {k: v for k, v in arrays.items() if k != "motion"})
    bad = arrays["motion"].copy()
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match="'motion' holds NaN"):
        PreparedClip("x", {**arrays, "motion": bad})
    with pytest.raises(InputError, match="cannot name a file"):
        DatasetWriter(tmp_path / "ds", {}).add(make_clip("../escape"))
    path = save_clip(make_clip(), tmp_path / "c.npz")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(InputError, match=r"prepared clip .*c.npz cannot be read"):
        load_clip(path)
    with pytest.raises(InputError, match="does not exist"):
        load_clip(tmp_path / "missing.npz")
