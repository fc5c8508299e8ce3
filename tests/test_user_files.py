"""user_files: UTF-8 with or without BOM, offsets counted in the file's bytes, CSV as spreadsheets save it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ditto_research.errors import InputError
from ditto_research.user_files import decode_text, read_csv


def test_the_offset_counts_the_byte_order_mark():
    data = b"\xef\xbb\xbfok\nna\xefve\n"  # a lone 0xef: not UTF-8
    with pytest.raises(InputError, match=r"^x is not UTF-8 text \(byte 0xef at offset 8, line 2\)"):
        decode_text(data, "x")
    assert decode_text(b"\xef\xbb\xbfna\xc3\xafve", "x") == "naïve"


def test_a_csv_from_a_spreadsheet(tmp_path):
    """BOM, CRLF line ends, a quoted cell with a comma and a line break, spaces around names and cells."""
    path = tmp_path / "set.csv"
    path.write_bytes(b'\xef\xbb\xbf source , audio\r\n"a, b.png"," two\r\nlines "\r\nc.png\r\n')
    header, rows = read_csv(path, "dataset file set.csv")
    assert header == ["source", "audio"]
    assert rows == [{"source": "a, b.png", "audio": "two\r\nlines"}, {"source": "c.png", "audio": ""}]


def test_column_problems_names_missing_then_unknown() -> None:
    from ditto_research.user_files import column_problems

    allowed = ("source", "audio", "id")
    assert column_problems(["source", "audio"], ("source", "audio"), allowed) is None
    assert (
        column_problems(["audio", "x", "b"], ("source", "audio"), allowed) == "missing source; unknown b, x"
    )
    assert column_problems(["source", "audio", "x"], (), allowed) == "unknown x"


def test_list_path_is_relative_to_the_list_and_empty_is_none(tmp_path, monkeypatch) -> None:
    from ditto_research.user_files import list_path

    listing = tmp_path / "lists" / "clips.csv"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert list_path("  ", listing) is None
    assert list_path(" a/b.mp4 ", listing) == tmp_path / "lists" / "a" / "b.mp4"
    assert list_path("/data/c.mp4", listing) == Path("/data/c.mp4")
    assert list_path("~/d.mp4", listing) == tmp_path / "home" / "d.mp4"
