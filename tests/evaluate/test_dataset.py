"""Evaluation sets: the built-in one, CSV and YAML files, and every bad input named before anything runs."""

from __future__ import annotations

import re
import wave

import pytest

from ditto_research.errors import InputError
from ditto_research.evaluate.dataset import BUILTIN_CLIPS, load_dataset, trim_audio
from tests.evaluate.conftest import write_csv


def _seconds(path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def test_builtin_set_is_generated_locally_shortest_first(tmp_path):
    clips = load_dataset("builtin", builtin_dir=tmp_path)
    assert [c.clip_id for c in clips] == [b.clip_id for b in BUILTIN_CLIPS]
    assert all(c.source.is_file() and c.audio.is_file() for c in clips)
    lengths = [_seconds(c.audio) for c in clips]
    assert lengths == sorted(lengths) and 0.5 < lengths[0] < 1.5
    again = load_dataset("builtin", builtin_dir=tmp_path, max_clips=2)  # cached files are reused
    assert again == clips[:2]


def test_csv_paths_are_relative_to_the_file(eval_media, tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.wav").write_bytes(eval_media["speech"].read_bytes())
    path = write_csv(
        tmp_path / "set.csv",
        [(str(eval_media["face"]), "media/a.wav"), (str(eval_media["face"]), "media/a.wav")],
    )
    clips = load_dataset(path)
    assert [c.audio for c in clips] == [tmp_path / "media" / "a.wav"] * 2
    assert len({c.clip_id for c in clips}) == 2  # ids are unique


def test_yaml_list_with_ids(eval_media, tmp_path):
    path = tmp_path / "set.yaml"
    path.write_text(
        f"- {{id: first, source: {eval_media['face']}, audio: {eval_media['speech']}}}\n"
        f"- {{source: {eval_media['face']}, audio: {eval_media['speech2']}}}\n"
    )
    clips = load_dataset(path)
    assert clips[0].clip_id == "first" and clips[1].audio == eval_media["speech2"]


def test_missing_files_are_all_listed_before_running(eval_media, tmp_path):
    path = write_csv(tmp_path / "set.csv", [(str(eval_media["face"]), "gone.wav"), ("nope.png", "gone2.wav")])
    with pytest.raises(
        InputError, match=r"clip 1 audio gone.wav; clip 2 source nope.png; clip 2 audio gone2.wav"
    ):
        load_dataset(path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("set.csv", "sorce,audio\na,b\n", "missing source; unknown sorce"),
        ("set.csv", "source,audio\n", "has no clips"),
        ("set.yaml", "source: a\n", "YAML list of mappings"),
        ("set.yaml", "- [unclosed\n", "not valid YAML"),
        ("set.txt", "source,audio\n", r"must end in .csv, .yaml or .yml"),
    ],
)
def test_bad_dataset_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_dataset(path)


def test_missing_dataset_file(tmp_path):
    with pytest.raises(InputError, match="dataset file .*missing.csv does not exist"):
        load_dataset(tmp_path / "missing.csv")


def test_trim_audio(eval_media, tmp_path):
    clip = load_dataset(
        write_csv(tmp_path / "s.csv", [(str(eval_media["face"]), str(eval_media["speech"]))])
    )[0]
    short = trim_audio(clip, 0.25, tmp_path / "cut")
    assert short.source == clip.source and abs(_seconds(short.audio) - 0.25) < 1e-3


def test_csv_saved_by_excel_with_a_byte_order_mark_reads_like_plain_utf8(eval_media, tmp_path):
    path = tmp_path / "set é.csv"
    text = f"source,audio,id\n{eval_media['face']},{eval_media['speech']},café\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    clips = load_dataset(path)
    assert [(c.source, c.audio) for c in clips] == [(eval_media["face"], eval_media["speech"])]
    assert clips[0].clip_id == "caf"  # the id is the user's (slugged), the BOM is not in any column


@pytest.mark.parametrize("name", ["set.csv", "set.yaml"])
def test_a_file_that_is_not_utf8_names_the_byte_and_the_fix(tmp_path, name):
    path = tmp_path / name
    head = "source,audio\n" if name.endswith(".csv") else "- {source: a.png, "
    path.write_bytes(head.encode() + "audio: été.wav}\n".encode("latin-1"))
    offset, line = len(head) + len("audio: "), head.count("\n") + 1
    with pytest.raises(InputError) as info:
        load_dataset(path)
    assert str(info.value) == (
        f"dataset file {path} is not UTF-8 text (byte 0xe9 at offset {offset}, line {line}); "
        "save it as UTF-8 (with or without BOM)"
    )


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "set.csv",
            b"source,audio\na.png," + b"x" * 200_000 + b"\n",
            "is not a valid CSV file (field larger than field limit",
        ),
        ("set.yaml", b"- &clip {source: a.png, audio: b.wav}\n- *clip\n", "uses YAML anchors or aliases"),
        ("set.yaml", b"- {source: [[a.png]], audio: b.wav}\n", "nests deeper than 2 levels"),
    ],
)
def test_malformed_dataset_files_are_one_line(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        load_dataset(path)
    assert "\n" not in str(info.value)
