"""control.ctrl_info_file: a bounded parser (size, anchors and aliases, depth) that names keys and frames,
never the file's contents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ditto_research.errors import ConfigError
from ditto_research.motion.controls import (
    MAX_CTRL_DEPTH,
    MAX_CTRL_FILE_BYTES,
    FrameControls,
    load_ctrl_info_file,
)

# 361 bytes that a YAML loader expands to 10**9 strings ("billion laughs").
ALIAS_BOMB = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{b}: &{b} [*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)

# delta_exp as keypoints x xyz: the deepest valid form (21 lists, not one repeated: PyYAML would alias it).
DELTA_EXP_21X3 = [[0.01, 0.0, -0.01] for _ in range(21)]


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.fixture
def no_yaml_construction(monkeypatch):
    """Fail the test if a YAML document is built (the checks must refuse it from the event stream first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a YAML document was constructed")

    monkeypatch.setattr(yaml, "load", refuse)


def test_an_alias_bomb_is_refused_before_anything_is_built(tmp_path, no_yaml_construction):
    assert len(ALIAS_BOMB) < 400
    path = write(tmp_path, "ctrl.yaml", ALIAS_BOMB)
    with pytest.raises(ConfigError) as info:
        load_ctrl_info_file(path)
    assert str(info.value) == (
        f"control.ctrl_info_file {path} uses YAML anchors or aliases (&name / *name), which it may not; "
        "write every value out in full (PyYAML's dump writes them for an object it meets twice)"
    )


def test_even_a_harmless_anchor_is_refused(tmp_path):
    path = write(tmp_path, "ctrl.yaml", "0: {delta_yaw: &y 5}\n1: {delta_yaw: *y}\n")
    with pytest.raises(ConfigError, match="uses YAML anchors or aliases"):
        load_ctrl_info_file(path)


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "ctrl.yaml"
    with path.open("wb") as f:
        f.truncate(MAX_CTRL_FILE_BYTES + 1)  # sparse: nothing is written, the stat says it is big

    def refuse(*args, **kwargs):
        raise AssertionError("the file was read")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ConfigError) as info:
        load_ctrl_info_file(path)
    assert str(info.value) == (
        f"control.ctrl_info_file {path} is 8,388,609 bytes, over the 8 MB limit for this file; give only the "
        "frames that change a control (the others get control.overall_ctrl_info)"
    )


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ctrl.json", json.dumps({"0": {"delta_exp": [DELTA_EXP_21X3]}})),
        ("ctrl.yaml", yaml.safe_dump({0: {"delta_exp": [DELTA_EXP_21X3]}})),
        ("ctrl.json", "[" * 100_000 + "]" * 100_000),  # past the interpreter's recursion limit
        ("ctrl.yaml", "[" * 100_000 + "]" * 100_000),
    ],
    ids=["json", "yaml", "json-very-deep", "yaml-very-deep"],
)
def test_nesting_deeper_than_the_format_is_refused(tmp_path, name, text, no_yaml_construction):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_ctrl_info_file(path)
    assert str(info.value).startswith(
        f"control.ctrl_info_file {path} nests deeper than {MAX_CTRL_DEPTH} levels; its form is {{frame: "
    )


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ctrl.yaml", "0: {delta_yaw: 5}\n2: {delta_exp: 0.01, vad_alpha: 0}\n"),
        ("ctrl.yml", "- {delta_yaw: 5}\n- {}\n- {delta_exp: 0.01, vad_alpha: 0}\n"),
        ("ctrl.json", '{"0": {"delta_yaw": 5}, "2": {"delta_exp": 0.01, "vad_alpha": 0}}'),
        ("ctrl.json", '[{"delta_yaw": 5}, null, {"delta_exp": [0.01], "vad_alpha": 0}]'),
        ("ctrl.yaml", b"\xef\xbb\xbf0: {delta_yaw: 5}\n2: {delta_exp: 0.01, vad_alpha: 0}\n"),
    ],
    ids=["yaml-mapping", "yaml-list", "json-mapping", "json-list", "yaml-with-bom"],
)
def test_the_valid_forms_are_accepted(tmp_path, name, text):
    frames = load_ctrl_info_file(write(tmp_path, name, text))
    assert {k: v for k, v in frames.items() if v != FrameControls()} == {
        0: FrameControls(delta_yaw=5.0),
        2: FrameControls(delta_exp=0.01, vad_alpha=0.0),
    }


@pytest.mark.parametrize("name", ["ctrl.yaml", "ctrl.json"])
def test_the_deepest_valid_form_is_accepted(tmp_path, name):
    data = {"3": {"delta_exp": DELTA_EXP_21X3, "fade_out_keys": ["exp", "yaw"]}}
    path = write(tmp_path, name, json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    frames = load_ctrl_info_file(path)
    assert frames[3].delta_exp == tuple(v for xyz in DELTA_EXP_21X3 for v in xyz)
    assert frames[3].fade_out_keys == ("exp", "yaw")


def test_an_empty_file_has_no_controls(tmp_path):
    assert load_ctrl_info_file(write(tmp_path, "ctrl.yaml", "")) == {}


def test_a_file_that_is_not_utf8_names_the_byte(tmp_path):
    path = write(tmp_path, "ctrl.yaml", "0: {delta_yaw: 5}\n# réglage\n".encode("latin-1"))
    with pytest.raises(
        ConfigError, match=r"is not UTF-8 text \(byte 0xe9 at offset 21, line 2\); save it as"
    ):
        load_ctrl_info_file(path)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"0": list(range(100_000))}, "frame 0: controls must be a mapping {control: value}, got a list"),
        ({"0": {"delta_yaw": "x" * 100_000}}, "frame 0: frame control delta_yaw='xxxxxxxxx"),
        ({"0": {"delta_exp": list(range(100_000))}}, "frame 0: delta_exp needs 1 or 63 numbers, got 100000"),
        ({"k" * 100_000: {"delta_yaw": 1}}, "key 'kkkkkkkk"),
        ({"0": {"y" * 100_000: 1}}, "frame 0: unknown frame control(s) 'yyyyyyy"),
    ],
    ids=["not-a-mapping", "not-a-number", "wrong-length", "bad-frame-key", "unknown-control"],
)
def test_errors_name_the_frame_and_the_key_not_the_contents(tmp_path, data, named):
    path = write(tmp_path, "ctrl.json", json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load_ctrl_info_file(path)
    message = str(info.value)
    assert message.startswith(f"control.ctrl_info_file {path}") and named in message
    assert len(message) < len(str(path)) + 250 and "\n" not in message


def test_a_huge_integer_is_invalid_not_a_crash(tmp_path):
    for name in ("ctrl.json", "ctrl.yaml"):
        path = write(tmp_path, name, '{"0": {"delta_yaw": ' + "9" * 5000 + "}}")
        with pytest.raises(ConfigError, match=f"is not valid {'json' if name.endswith('json') else 'YAML'}"):
            load_ctrl_info_file(path)
