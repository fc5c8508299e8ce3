"""ditto_research.atomic: a write is all or nothing, never leaves a temporary file, keeps the suffix for
writers that choose the format from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ditto_research.atomic import write_atomically, write_path_atomically, write_text_atomically


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_each_writer_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    assert write_atomically(target, lambda f: f.write(b"new bytes")) == target
    assert target.read_bytes() == b"new bytes"
    text = tmp_path / "rows.csv"
    write_text_atomically(text, lambda f: f.write("a,é\r\nb,c\r\n"))
    assert text.read_bytes() == "a,é\r\nb,c\r\n".encode()  # newline="" keeps csv's own line ends
    seen: list[Path] = []
    image = tmp_path / "picture.png"
    write_path_atomically(image, lambda p: (seen.append(p), p.write_bytes(b"png"))[1])
    assert (
        seen[0].suffix == ".png" and seen[0].parent == tmp_path and seen[0].name.startswith(".picture.png.")
    )
    assert image.read_bytes() == b"png"
    assert _only(tmp_path) == ["out.bin", "picture.png", "rows.csv"]


@pytest.mark.parametrize("writer", [write_atomically, write_text_atomically, write_path_atomically])
def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path: Path, writer) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("previous")

    def fail(handle) -> None:
        if isinstance(handle, Path):
            handle.write_text("half")
        else:
            handle.write(b"half" if writer is write_atomically else "half")
        raise KeyboardInterrupt  # a stopped job, not only an Exception

    with pytest.raises(KeyboardInterrupt):
        writer(target, fail)
    assert target.read_text() == "previous" and _only(tmp_path) == ["keep.txt"]
