"""Checkpoint root discovery, the restricted config unpickler, and the checkpoints CLI."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ditto_research.checkpoints import (
    DOWNLOAD_COMMAND,
    FACE_FILES,
    HUBERT_FILE,
    MODEL_FILES,
    CheckpointRoot,
    check_root,
    convert_cfg,
    find_problems,
    load_cfg_pkl,
    main,
    write_cfg_yaml,
)
from ditto_research.errors import CheckpointError

OFFICIAL_LIKE_CFG = {
    "base_cfg": {"decoder_cfg": {"model_path": "models/decoder.pth", "device": "cuda"}},
    "audio2motion_cfg": {
        "model_path": "models/lmdm_v0.4_hubert.pth",
        "device": "cuda",
        "motion_feat_dim": 265,
        "audio_feat_dim": 1103,
        "seq_frames": 80,
        "use_emo": True,
        "use_sc": True,
        "use_eye_open": True,
        "use_eye_ball": True,
        "w2f_type": "hubert",
    },
    "default_kwargs": {
        "sampling_timesteps": np.int64(50),
        "overlap_v2": 10,
        "smo_k_d": 3,
        "crop_scale": 2.3,
        "online_mode": False,
        "emo": 4,
        "delta_eye_arr": np.zeros((4, 63), dtype=np.float32),
        "ctrl_info": {0: {"fade_alpha": 0.0}},
        "N_d": -1,
        "mystery_knob": 1,
    },
}


class _Exploit:
    """Pickles to a call of os.system: must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_reads_plain_data(tmp_path):
    path = tmp_path / "cfg.pkl"
    path.write_bytes(pickle.dumps(OFFICIAL_LIKE_CFG))
    cfg = load_cfg_pkl(path)
    assert cfg["audio2motion_cfg"]["audio_feat_dim"] == 1103
    np.testing.assert_array_equal(cfg["default_kwargs"]["delta_eye_arr"], np.zeros((4, 63), np.float32))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"base_cfg": _Exploit(marker)}))
    with pytest.raises(CheckpointError, match=r"refused.*(posix|os)\.system"):
        load_cfg_pkl(path)
    assert not marker.exists()


def test_truncated_and_non_dict_pickles(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(OFFICIAL_LIKE_CFG)[:50])
    with pytest.raises(CheckpointError, match="truncated or not a pickle"):
        load_cfg_pkl(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_cfg_pkl(path)


def test_convert_cfg_maps_official_keys(tmp_path):
    values, arrays, notes = convert_cfg(OFFICIAL_LIKE_CFG, tmp_path)
    assert values["sampler"]["steps"] == 50 and isinstance(values["sampler"]["steps"], int)
    assert values["motion"]["overlap_v2"] == 10 and values["motion"]["use_eye_ball"] is True
    assert values["mode"]["name"] == "offline"
    assert values["face"]["crop_scale"] == 2.3
    assert values["control"]["ctrl_info"] == {"0": {"fade_alpha": 0.0}}
    assert "control.delta_eye_arr" in arrays
    assert any("mystery_knob" in n for n in notes)
    assert not any("N_d" in n for n in notes)


def test_convert_cfg_yaml_is_a_usable_preset(tmp_path):
    pkl = tmp_path / "v0.4_hubert_cfg_pytorch.pkl"
    pkl.write_bytes(pickle.dumps(OFFICIAL_LIKE_CFG))
    out = tmp_path / "preset" / "official.yaml"
    text = write_cfg_yaml(pkl, out)
    assert text.startswith("# @package _global_")
    assert (tmp_path / "preset" / "control_delta_eye_arr.npy").is_file()
    with pytest.raises(CheckpointError, match="already exists"):
        write_cfg_yaml(pkl, out)
    from ditto_research.config import to_config
    from hydra import compose as hcompose, initialize_config_dir
    from ditto_research.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hcompose("infer", [f"hydra.searchpath=[file://{tmp_path}]", "+preset=official"])
    typed = to_config(cfg)
    assert typed.sampler.steps == 50 and typed.control.delta_eye_arr.endswith("control_delta_eye_arr.npy")


def test_missing_root_lists_everything_with_download_command(tmp_path):
    (tmp_path / "ditto_pytorch" / "models").mkdir(parents=True)
    (tmp_path / "ditto_pytorch" / "models" / "decoder.pth").write_bytes(b"")
    problems = find_problems(tmp_path, deep=False)
    n_expected = len(MODEL_FILES) + len(FACE_FILES) + 1 + 1
    assert len(problems) == n_expected
    assert any("decoder.pth is empty" in p for p in problems)
    with pytest.raises(CheckpointError) as info:
        check_root(tmp_path)
    message = str(info.value)
    assert DOWNLOAD_COMMAND in message and "\n" not in message
    assert f"{len(problems)} problem(s)" in message


def test_parts_limit_what_is_checked(tmp_path):
    root = CheckpointRoot(tmp_path)
    root.aux_dir.mkdir(parents=True)
    root.aux_path(HUBERT_FILE).write_bytes(b"x")
    assert find_problems(tmp_path, ["hubert"], deep=False) == []
    assert not root.has_face_models()


def test_cli_check_reports_and_exits_nonzero(tmp_path, capsys):
    assert main(["check", str(tmp_path), "--quick"]) == 1
    err = capsys.readouterr().err
    assert "problem(s)" in err and DOWNLOAD_COMMAND in err


def test_cli_convert_cfg_refuses_code_with_one_line(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Exploit(tmp_path / "m")))
    proc = subprocess.run(
        [sys.executable, "-m", "ditto_research.checkpoints", "convert-cfg", str(path)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "refused" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()
