"""DITTO_CACHE_DIR: every use goes through one function, and an unusable value is one line naming it."""

from __future__ import annotations

import tempfile

import pytest

from ditto_research.cache import cache_folder, cache_root
from ditto_research.errors import InputError

UNUSABLE = {
    "a regular file": lambda tmp: _file(tmp / "cache_file"),
    "under a regular file": lambda tmp: _file(tmp / "cache_file") / "sub",
    "under /proc": lambda tmp: "/proc/ditto_cache",
}


def _file(path):
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("where", UNUSABLE)
def test_an_unusable_cache_dir_is_one_line_naming_the_variable(where, tmp_path, monkeypatch):
    from ditto_research.evaluate.dataset import builtin_dataset
    from ditto_research.examples import cache_dir, example_audio, example_source

    value = str(UNUSABLE[where](tmp_path))
    monkeypatch.setenv("DITTO_CACHE_DIR", value)
    for use in (cache_dir, example_source, example_audio, builtin_dataset):
        with pytest.raises(InputError) as info:
            use()
        message = str(info.value)
        assert message.startswith(f"DITTO_CACHE_DIR={value} cannot hold the cache (") and "\n" not in message
        assert "set DITTO_CACHE_DIR to a writable folder, or unset it" in message
    if where == "a regular file":
        assert "(it is a file, not a folder)" in message


def test_the_default_cache_is_under_home_and_made_on_first_use(tmp_path, monkeypatch):
    monkeypatch.delenv("DITTO_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "ditto_research"
    assert cache_folder("examples") == tmp_path / ".cache" / "ditto_research" / "examples"
    assert (tmp_path / ".cache" / "ditto_research" / "examples").is_dir()
    _file(tmp_path / ".cache" / "elsewhere")
    monkeypatch.setenv("HOME", str(tmp_path / ".cache" / "elsewhere"))
    with pytest.raises(InputError, match="the cache folder .* cannot be used .*; set DITTO_CACHE_DIR to a"):
        cache_folder("examples")


def test_hydra_run_folders_do_not_silently_leave_a_chosen_cache(tmp_path, monkeypatch):
    """With the current folder unwritable, run logs go to the cache; a DITTO_CACHE_DIR the user set but that
    cannot hold them is their error to fix, not a reason to write somewhere else; the default falls back."""
    from ditto_research.command_line import writable_run_root

    monkeypatch.setenv("DITTO_CACHE_DIR", str(tmp_path / "cache"))
    assert writable_run_root("infer") == tmp_path / "cache" / "outputs" / "infer"
    monkeypatch.setenv("DITTO_CACHE_DIR", str(_file(tmp_path / "cache_file")))
    with pytest.raises(InputError, match="DITTO_CACHE_DIR=.*cache_file cannot hold the cache"):
        writable_run_root("infer")
    monkeypatch.delenv("DITTO_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "cache_file"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert writable_run_root("infer") == tmp_path / "tmp" / "ditto_research" / "outputs" / "infer"
