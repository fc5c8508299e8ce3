"""The prepare job end to end with ``model=tiny`` on real footage and on every kind of bad input: one list run
once (module fixture), then what its dataset, report and log say; resume, the bad-settings refusals, the exit
code of a job where everything fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ditto_research.config import compose, to_config
from ditto_research.constants import FPS
from ditto_research.data import PreparedDataset, TrainingWindows
from ditto_research.errors import InputError
from ditto_research.media.ffmpeg import find_ffmpeg
from ditto_research.pipeline.engine import Engine
from ditto_research.prepare.config import PrepareConfig, register_prepare_configs
from ditto_research.prepare.job import read_sources, run_prepare

REAL_CLIPS = Path(__file__).resolve().parents[2].parent / "shared" / "real_clips"
CLOSE_UP = REAL_CLIPS / "-1wCGAxqT_4+000000_000177+p0.mp4"  # 412x454, 7.17 s
INTERVIEW = REAL_CLIPS / "Clip+WSGW-7gHS6A+P0+C1+F2551-2669.mp4"  # 1920x1080, 6.4 s
BASE = ["model=tiny", "face=mediapipe", "audio_encoder=untrained", "progress=false"]

pytestmark = pytest.mark.skipif(
    not (CLOSE_UP.is_file() and INTERVIEW.is_file()), reason="../shared/real_clips not present"
)


def ffmpeg(*args: str) -> None:
    subprocess.run([find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_media(folder: Path) -> dict[str, Path]:
    """Test videos, each made from the real clips or ffmpeg's test sources (see the names)."""
    folder.mkdir(parents=True, exist_ok=True)
    m = {
        name: folder / f"{name}.mp4" for name in ("joined", "sixty", "twofaces", "short", "silent", "noface")
    }
    scale = "scale=412:454:force_original_aspect_ratio=increase,crop=412:454,setsar=1,fps=25"
    # 4 s of one person | 1 s of grey (no face) | 4 s of another person: a faceless gap, then a shot cut
    ffmpeg(
        "-t", "4", "-i", str(CLOSE_UP), "-f", "lavfi", "-t", "1", "-i", "color=c=gray:size=412x454:rate=25",
        "-f", "lavfi", "-t", "1", "-i", "anullsrc=r=44100:cl=stereo", "-t", "4", "-i", str(INTERVIEW),
        "-filter_complex",
        f"[0:v]{scale}[a];[1:v]{scale}[b];[3:v]{scale}[c];[a][0:a][b][2:a][c][3:a]concat=n=3:v=1:a=1[v][au]",
        "-map", "[v]", "-map", "[au]", "-c:v", "libx264", "-crf", "18", str(m["joined"]),
    )  # fmt: skip
    ffmpeg("-t", "4", "-i", str(CLOSE_UP), "-vf", "fps=60", "-c:v", "libx264", "-crf", "18", str(m["sixty"]))
    ffmpeg(
        "-t", "4", "-i", str(CLOSE_UP), "-filter_complex", "[0:v]split[l][r];[r]hflip[rf];[l][rf]hstack[v]",
        "-map", "[v]", "-map", "0:a", "-c:v", "libx264", "-crf", "18", str(m["twofaces"]),
    )  # fmt: skip
    ffmpeg("-t", "2", "-i", str(CLOSE_UP), "-c:v", "libx264", str(m["short"]))
    m["vfr"] = folder / "vfr.mp4"  # variable frame rate: 3 of every 5 frames kept, their own timestamps
    ffmpeg(
        "-t", "4", "-i", str(CLOSE_UP), "-vf", r"select='lt(mod(n\,5)\,3)'", "-fps_mode", "vfr",
        "-c:v", "libx264", str(m["vfr"]),
    )  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x96:rate=25:duration=4", str(m["silent"]))
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=96x96:rate=25:duration=4", "-t", "4", "-i", str(CLOSE_UP),
        "-map", "0:v", "-map", "1:a", "-shortest", str(m["noface"]),
    )  # fmt: skip
    m["audio_only"] = folder / "audio_only.mp4"
    ffmpeg("-t", "4", "-i", str(CLOSE_UP), "-vn", "-c:a", "aac", str(m["audio_only"]))
    m["truncated"] = folder / "truncated.mp4"
    data = CLOSE_UP.read_bytes()
    m["truncated"].write_bytes(data[: len(data) // 3])
    m["corrupt"] = folder / "corrupt.mp4"
    m["corrupt"].write_bytes(np.random.default_rng(0).bytes(50_000))
    return m


def config(videos: Path, out: Path, *extra: str) -> PrepareConfig:
    register_prepare_configs()
    cfg = compose("prepare", [*BASE, f"videos={videos}", f"out={out}", *extra])
    return to_config(cfg, PrepareConfig)


@pytest.fixture(scope="module")
def engine():
    e = Engine(config(Path("x"), Path("y")))
    yield e
    e.close()


@pytest.fixture(scope="module")
def job(tmp_path_factory, engine):
    """One job over a list holding real footage (whole, a time range, cut and gapped, 60 fps, two faces)
    and every kind of bad input."""
    root = tmp_path_factory.mktemp("prepare")
    media = make_media(root / "media")
    rows = [
        "video,id,emotion,start,end",
        f"{CLOSE_UP},closeup,happy,,",
        f"{CLOSE_UP},closeup_range,sad,1,5",
        "media/joined.mp4,,,,",
        "media/sixty.mp4,,3,,",
        "media/twofaces.mp4,,,,",
        "media/vfr.mp4,,,,",
        "media/short.mp4,,,,",
        "media/silent.mp4,,,,",
        "media/noface.mp4,,,,",
        "media/audio_only.mp4,,,,",
        "media/truncated.mp4,,,,",
        "media/corrupt.mp4,,,,",
        "media/missing.mp4,,,,",
    ]
    listing = root / "list.csv"
    listing.write_text("\ufeff" + "\n".join(rows) + "\n", encoding="utf-8")  # with a BOM, as Excel saves
    cfg = config(listing, root / "ds", "prepare.emotion=label")
    summary = run_prepare(cfg, engine)
    return root, cfg, summary, PreparedDataset(root / "ds"), media


def entries_by_source(dataset):
    out = {}
    for entry in dataset.entries:
        out.setdefault(entry["source_id"], []).append(entry)
    return out


def sources(dataset):
    return {s["id"]: s for s in json.loads((dataset.folder / "manifest.json").read_text())["sources"]}


def test_real_footage_becomes_clips_counted_from_its_duration(job):
    _, _, summary, dataset, _ = job
    clips = entries_by_source(dataset)
    assert [e["frames"] for e in clips["closeup"]] == [178]  # the file's frames 0-177 at 25 fps
    assert [e["segment"] for e in clips["closeup_range"]] == [[0, 100]]  # 1 s .. 5 s = 4 s x 25
    assert [e["frames"] for e in clips["sixty"]] == [100]  # 4 s at 60 fps -> 100 frames at 25
    assert [e["frames"] for e in clips["vfr"]] == [100]  # 4 s of variable frame rate -> 100 at 25
    assert summary.kept == 6 and summary.clips == 7
    closeup = dataset[[e["id"] for e in dataset.entries].index("closeup_f000000")]
    assert closeup["eye_open"].std(axis=0).min() > 1e-3  # real landmarks: the eyes move
    assert closeup.meta["emotion_source"] == "label happy"
    assert closeup["emotion"].argmax(axis=1).tolist() == [3] * 178
    sixty = dataset[[e["id"] for e in dataset.entries].index("sixty_f000000")]
    assert sixty["emotion"].argmax(axis=1).tolist() == [3] * 100  # a label given as its index
    windows = TrainingWindows(dataset)
    assert len(windows) == sum(e["frames"] - 80 for e in dataset.entries)


def test_footage_is_split_at_the_faceless_gap_and_at_the_shot_cut(job):
    _, _, _, dataset, _ = job
    joined = entries_by_source(dataset)["joined"]
    assert [e["segment"] for e in joined] == [[0, 100], [125, 225]]
    assert joined[0]["ended_by"] in ("a shot cut", "the face was lost")
    skipped = sources(dataset)["joined"]["skipped"]
    faceless = [s for s in skipped if s["reason"] == "no usable face"]
    assert faceless and faceless[0]["start"] >= 100 and faceless[-1]["stop"] <= 125


def test_two_faces_give_one_clip_of_the_chosen_face(job):
    _, _, _, dataset, _ = job
    (entry,) = entries_by_source(dataset)["twofaces"]
    assert entry["faces_seen"] == 2 and entry["frames"] == 100


def test_every_bad_input_is_skipped_with_its_reason_and_the_job_goes_on(job, caplog):
    root, _, summary, dataset, _ = job
    by_id = sources(dataset)
    expected = {
        "short": "needs at least 81",
        "silent": "has no audio track",
        "noface": "no segment of at least",
        "audio_only": "no video stream",
        "truncated": "",
        "corrupt": "neither an image nor a video",
        "missing": "does not exist",
    }
    for source_id, words in expected.items():
        assert by_id[source_id]["status"] == "skipped", source_id
        assert words in by_id[source_id]["reason"], (source_id, by_id[source_id]["reason"])
        assert "\n" not in by_id[source_id]["reason"]
    assert summary.skipped == len(expected)
    report = (root / "ds" / "report.md").read_text()
    for source_id in expected:
        assert f"`{source_id}.mp4`" in report
    assert "no usable face" in report and (root / "ds" / "contact_sheet.png").stat().st_size > 1000


def test_a_rerun_skips_what_is_finished(job, engine):
    root, cfg, _, dataset, _ = job
    before = (root / "ds" / "manifest.json").read_text()
    again = run_prepare(cfg, engine)
    assert again.done_before == again.sources == 13 and again.kept == again.skipped == 0
    assert json.loads((root / "ds" / "manifest.json").read_text())["clips"] == json.loads(before)["clips"]


def test_other_settings_into_the_same_dataset_are_refused(job, engine):
    root, _, _, _, _ = job
    with pytest.raises(InputError, match=r"prepared with other settings \(prepare\.flip: False -> True"):
        run_prepare(
            config(root / "list.csv", root / "ds", "prepare.emotion=label", "prepare.flip=true"), engine
        )


def test_an_unreadable_folder_is_reported_and_the_rest_listed(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "one.mp4").write_bytes(b"")
    (tmp_path / "b" / "two.mp4").write_bytes(b"")
    real = os.scandir

    def scandir(path="."):
        if Path(path) == tmp_path / "b":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found, problems = read_sources(tmp_path)
    assert [s.id for s in found] == ["a_one"]
    assert (
        len(problems) == 1 and problems[0].what == str(tmp_path / "b") and "unreadable" in problems[0].reason
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,emotion\nx,happy\n", "has no `video` column"),
        ("video,speed\nx.mp4,2\n", "unknown columns speed"),
        ("video,start,end\nx.mp4,5,2\n", "end=2 must be after start=5"),
        ("video,start\nx.mp4,soon\n", "start='soon' is not a number"),
    ],
)
def test_a_malformed_list_is_one_line(tmp_path, text, message):
    listing = tmp_path / "list.csv"
    listing.write_text(text)
    with pytest.raises(InputError, match=message):
        read_sources(listing)


def test_a_dataset_of_another_version_in_out_is_refused(tmp_path, engine):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.json").write_text('{"format": "ditto-prepared", "version": 0, "clips": []}')
    (tmp_path / "v.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="format version 0"):
        run_prepare(config(tmp_path, tmp_path / "ds"), engine)


def test_a_job_where_every_video_fails_exits_2(job, tmp_path):
    _, _, _, _, media = job
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("silent", "corrupt"):
        (folder / f"{name}.mp4").write_bytes(media[name].read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "ditto_research.prepare", *BASE, f"videos={folder}", f"out={tmp_path / 'ds'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no video of this job gave a clip (2 skipped"), last
    assert "Traceback" not in result.stderr
    assert "has no audio track" in (tmp_path / "ds" / "report.md").read_text()


def test_help_documents_every_prepare_key():
    result = subprocess.run(
        [sys.executable, "-m", "ditto_research.prepare", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    from dataclasses import fields

    from ditto_research.prepare.config import PrepareOptions

    for field in fields(PrepareOptions):
        assert f"prepare.{field.name} " in result.stdout, field.name


def test_frames_per_second_of_the_dataset_match_the_clips(job):
    _, _, _, dataset, _ = job
    for entry in dataset.entries:
        assert entry["fps"] == FPS
        start, stop = entry["segment"]
        assert stop - start == entry["frames"]


def test_an_emotion_classifier_scores_every_fifth_frame_and_interpolates(job, engine, tmp_path):
    import torch

    from tests.prepare.test_emotion import SIZE, _ConvNet, _export

    torch.manual_seed(1)
    model = _export(_ConvNet(8), torch.zeros(1, 3, SIZE, SIZE), tmp_path / "emotion.onnx")
    _, _, _, _, media = job
    cfg = config(
        media["sixty"], tmp_path / "ds", "prepare.emotion=classifier", f"prepare.emotion_model={model}"
    )
    listing = tmp_path / "list.txt"
    listing.write_text(f"{media['sixty']}\n")
    cfg.videos = str(listing)
    summary = run_prepare(cfg, engine)
    assert summary.clips == 1
    clip = PreparedDataset(tmp_path / "ds")[0]
    rows = clip["emotion"]
    assert clip.meta["emotion_source"] == "classifier emotion.onnx"
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-5)
    assert np.ptp(rows[::5], axis=0).max() > 1e-4  # the faces differ, so do the scores
    np.testing.assert_allclose(rows[2], rows[0] * 0.6 + rows[5] * 0.4, atol=1e-6)  # linear in between
    np.testing.assert_array_equal(rows[95:], np.repeat(rows[95:96], 5, axis=0))  # the last score held


def test_a_missing_emotion_model_is_one_line_before_any_video(tmp_path, engine):
    (tmp_path / "v.mp4").write_bytes(b"")
    cfg = config(tmp_path, tmp_path / "ds", "prepare.emotion=classifier", "prepare.emotion_model=/nope.onnx")
    with pytest.raises(InputError, match="emotion model not found: /nope.onnx"):
        run_prepare(cfg, engine)
