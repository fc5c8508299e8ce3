"""Checkpoint root discovery, the restricted config unpickler, and the checkpoints CLI."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

from ditto_research.checkpoints import (
    DOWNLOAD_COMMAND,
    DOWNLOAD_PARTS,
    FACE_FILES,
    HF_REPO,
    HUBERT_FILE,
    MODEL_FILES,
    CheckpointRoot,
    check_root,
    convert_cfg,
    download_selection,
    find_problems,
    hf_download_command,
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
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from ditto_research.config import CONF_DIR, register_configs, to_config

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
    assert f"(or: {hf_download_command(tmp_path)})" in message and "huggingface-cli" not in message


def test_parts_limit_what_is_checked(tmp_path):
    root = CheckpointRoot(tmp_path)
    root.aux_dir.mkdir(parents=True)
    root.aux_path(HUBERT_FILE).write_bytes(b"x")
    assert find_problems(tmp_path, ["hubert"], deep=False) == []
    assert not root.has_face_models()


def test_the_package_answers_every_name_of_the_former_module():
    """checkpoints.py became a package (layout, check, convert, download, cli); old imports keep working."""
    import ditto_research.checkpoints as package

    former = (
        "CFG_FILES CHECK_PARTS DOWNLOAD_COMMAND DOWNLOAD_PARTS FACE_FILES HF_REPO HUBERT_FILE MODEL_FILES "
        "PARTS CheckpointRoot DownloadPart check_root convert_cfg download download_hint download_selection "
        "find_problems hf_download_command load_cfg_pkl main root_problem write_cfg_yaml"
    ).split()
    assert [name for name in former if not hasattr(package, name)] == []
    assert set(former) <= set(package.__all__)


def test_cli_check_reports_and_exits_nonzero(tmp_path, capsys):
    (tmp_path / "ditto_pytorch").mkdir()
    assert main(["check", str(tmp_path), "--quick"]) == 1
    err = capsys.readouterr().err
    assert "problem(s)" in err and f"{DOWNLOAD_COMMAND} {tmp_path} (or: hf download {HF_REPO}" in err


@pytest.mark.parametrize("content", ["empty", "random"])
def test_cli_check_on_no_checkpoint_root_is_one_line(tmp_path, content):
    folder = tmp_path / "somewhere"
    folder.mkdir()
    if content == "random":
        (folder / "notes.txt").write_text("hello")
        (folder / "models").mkdir()
    code = (
        "import sys; from ditto_research.checkpoints import main; "
        f"rc = main(['check', {str(folder)!r}]); "
        "print(sorted({'torch', 'onnx', 'huggingface_hub'} & set(sys.modules))); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert (
        f"{folder} is not a checkpoint root: expected ditto_cfg/ and ditto_pytorch/ of {HF_REPO}"
        in proc.stderr
    )
    assert f"{DOWNLOAD_COMMAND} {folder} (or: {hf_download_command(folder)})" in proc.stderr
    assert proc.stdout.strip() == "[]"  # said before any model code was imported


def test_check_onnx_and_trt_parts(tmp_path):
    root = CheckpointRoot(tmp_path)
    root.onnx_dir.mkdir()
    (root.onnx_dir / "decoder.onnx").write_bytes(b"x")
    problems = find_problems(tmp_path, ["onnx", "trt"], deep=False)
    assert (
        sum("ditto_onnx" in p and "missing" in p for p in problems) == 5
    )  # 6 networks, hubert.onnx not needed
    assert problems[-1] == f"no TensorRT engines: nothing matches {tmp_path / 'ditto_trt_*'}/*.engine"
    (tmp_path / "ditto_trt_Ampere_Plus").mkdir()
    (tmp_path / "ditto_trt_Ampere_Plus" / "decoder_fp16.engine").write_bytes(b"x")
    assert find_problems(tmp_path, ["trt"], deep=False) == []
    with pytest.raises(CheckpointError, match=r"--parts onnx \(or: hf download .*ditto_onnx/\*"):
        check_root(tmp_path, ["onnx"])


def test_cli_convert_cfg_refuses_code_with_one_line(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Exploit(tmp_path / "m")))
    proc = subprocess.run(
        [sys.executable, "-m", "ditto_research.checkpoints", "convert-cfg", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "refused" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------------------------ download
# snapshot_download and HfApi.repo_info are stubbed: these tests never touch the network.

SHA = "0123456789abcdef0123456789abcdef01234567"


def _official_tree(
    root: Path, patterns: list[str] | None, skip: str | None = None, content: bytes = b"x"
) -> None:
    """Write non-empty stand-ins for the official files the allow-patterns select."""
    from fnmatch import fnmatch

    files = [f"ditto_pytorch/models/{f}" for f in MODEL_FILES.values()]
    files += [f"ditto_pytorch/aux_models/{f}" for f in (*FACE_FILES, HUBERT_FILE)]
    files += ["ditto_cfg/v0.4_hubert_cfg_pytorch.pkl", "ditto_trt_Ampere_Plus/decoder_fp16.engine"]
    files += [
        f"ditto_onnx/{n}.onnx"
        for n in (
            "appearance_extractor",
            "motion_extractor",
            "warp_network",
            "decoder",
            "stitch_network",
            "lmdm_v0.4_hubert",
            "hubert",
        )
    ]
    for name in files:
        if name != skip and (patterns is None or any(fnmatch(name, p) for p in patterns)):
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps(OFFICIAL_LIKE_CFG) if name.endswith(".pkl") else content)


class FakeHub:
    """Records what was asked of the Hub; ``fail`` is raised by repo_info, ``snapshot_fail`` by
    snapshot_download."""

    def __init__(self) -> None:
        self.info_calls: list[dict] = []
        self.snapshot_calls: list[dict] = []
        self.fail: Exception | None = None
        self.snapshot_fail: Exception | None = None
        self.skip: str | None = None
        self.content = b"x"

    def repo_info(self, api, repo_id, **kwargs):
        self.info_calls.append({"repo_id": repo_id, **kwargs})
        if self.fail is not None:
            raise self.fail
        return types.SimpleNamespace(sha=SHA)

    def snapshot_download(self, repo_id, **kwargs):
        self.snapshot_calls.append({"repo_id": repo_id, **kwargs})
        if self.snapshot_fail is not None:
            raise self.snapshot_fail
        _official_tree(Path(kwargs["local_dir"]), kwargs["allow_patterns"], self.skip, self.content)
        return str(kwargs["local_dir"])


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(
        huggingface_hub.HfApi, "repo_info", lambda api, repo_id, **kw: fake.repo_info(api, repo_id, **kw)
    )
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    return fake


@pytest.mark.parametrize(
    ("parts", "patterns", "checks"),
    [
        (["pytorch"], ["ditto_cfg/*", "ditto_pytorch/*"], ("models", "face", "hubert", "cfg")),
        (
            ["onnx"],
            ["ditto_cfg/*", "ditto_onnx/*", "ditto_pytorch/aux_models/*"],
            ("face", "hubert", "cfg", "onnx"),
        ),
        (
            ["trt"],
            ["ditto_cfg/*", "ditto_trt*/*", "ditto_pytorch/aux_models/*"],
            ("face", "hubert", "cfg", "trt"),
        ),
        (["all"], None, ("models", "face", "hubert", "cfg", "onnx", "trt")),
        (
            ["onnx", "pytorch"],
            ["ditto_cfg/*", "ditto_onnx/*", "ditto_pytorch/aux_models/*", "ditto_pytorch/*"],
            ("models", "face", "hubert", "cfg", "onnx"),
        ),
    ],
)
def test_download_parts_select_patterns_and_checks(parts, patterns, checks):
    assert download_selection(parts) == (patterns, checks)
    include = "".join(f' --include "{p}"' for p in patterns or ())
    assert hf_download_command("ck", parts) == f"hf download {HF_REPO}{include} --local-dir ck"


def test_cli_download_defaults_to_pytorch_in_checkpoints(tmp_path, monkeypatch, capsys, hub):
    monkeypatch.chdir(tmp_path)
    assert main(["download", "--quick"]) == 0
    (call,) = hub.snapshot_calls
    assert call == {
        "repo_id": HF_REPO,
        "revision": SHA,
        "local_dir": Path("checkpoints"),
        "allow_patterns": ["ditto_cfg/*", "ditto_pytorch/*"],
    }
    assert hub.info_calls[0]["repo_id"] == HF_REPO and 0 < hub.info_calls[0]["timeout"] <= 60
    assert capsys.readouterr().out == "checkpoints: OK (models, face, hubert, cfg)\n"
    assert not (tmp_path / "checkpoints" / "ditto_onnx").exists()


def test_cli_download_parts_comma_separated_and_repeated(tmp_path, capsys, hub):
    assert (
        main(["download", str(tmp_path / "ck"), "--parts", "onnx,trt", "--parts", "pytorch", "--quick"]) == 0
    )
    patterns = hub.snapshot_calls[0]["allow_patterns"]
    assert patterns == [
        "ditto_cfg/*",
        "ditto_onnx/*",
        "ditto_pytorch/aux_models/*",
        "ditto_trt*/*",
        "ditto_pytorch/*",
    ]
    assert "OK (models, face, hubert, cfg, onnx, trt)" in capsys.readouterr().out
    assert main(["download", str(tmp_path / "ck"), "--parts", "all", "--quick"]) == 0
    assert hub.snapshot_calls[1]["allow_patterns"] is None


def test_cli_download_rejects_unknown_part(capsys, hub):
    with pytest.raises(SystemExit) as info:
        main(["download", "--parts", "pytorch,tensorflow"])
    assert info.value.code == 2
    assert "choose from pytorch, onnx, trt, all" in capsys.readouterr().err and not hub.info_calls


def test_cli_download_checks_afterwards_and_fails_on_problems(tmp_path, capsys, hub):
    hub.skip = "ditto_pytorch/models/decoder.pth"
    assert main(["download", str(tmp_path), "--quick"]) == 1
    err = capsys.readouterr().err
    assert f"missing {tmp_path / hub.skip}" in err and "1 problem(s)" in err and DOWNLOAD_COMMAND in err


def test_cli_download_check_loads_files_by_default(tmp_path, capsys, hub):
    hub.content = b"not a model"
    assert main(["download", str(tmp_path), "--parts", "onnx"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'ditto_onnx' / 'decoder.onnx'} is not a valid ONNX file" in err


def _hub_failure(kind: str) -> tuple[Exception, str]:
    """An exception huggingface_hub raises when the Hub cannot be asked, and what the error line must say."""
    httpx = pytest.importorskip("httpx2", reason="huggingface_hub >= 2 is built on httpx2")

    def response(status: int) -> object:
        return httpx.Response(
            status, request=httpx.Request("GET", f"https://huggingface.co/api/models/{HF_REPO}")
        )

    reach = "could not reach the Hugging Face Hub"
    return {
        "dns": (
            httpx.ConnectError("[Errno -2] Name or service not known"),
            f"{reach} (ConnectError: [Errno -2]",
        ),
        "timeout": (httpx.ConnectTimeout("timed out"), f"{reach} (ConnectTimeout: timed out)"),
        "offline": (OfflineModeIsEnabled("offline"), f"{reach} (offline mode: HF_HUB_OFFLINE is set)"),
        "not_found": (
            RepositoryNotFoundError("404 Client Error.\nRepository Not Found", response=response(404)),
            f"the Hugging Face Hub refused {HF_REPO} (404 Client Error.)",
        ),
        "server": (HfHubHTTPError("500 Server Error", response=response(500)), "refused"),
    }[kind]


@pytest.mark.parametrize("kind", ["dns", "timeout", "offline", "not_found", "server"])
def test_download_without_hub_is_one_line_exit_2(tmp_path, capsys, hub, kind):
    hub.fail, expected = _hub_failure(kind)
    root = tmp_path / "ck"
    assert main(["download", str(root), "--parts", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err
    assert err.endswith(f"; on a machine with network run: {hf_download_command(root, ['onnx'])}\n")
    assert len(hub.info_calls) == 1 and not hub.snapshot_calls  # one short request, no retry loop
    assert not root.exists()


def test_download_broken_off_is_one_line(tmp_path, capsys, hub):
    hub.snapshot_fail = LocalEntryNotFoundError("An error happened while trying to locate the files")
    assert main(["download", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "download from the Hugging Face Hub broke off" in err
    assert f"run: hf download {HF_REPO} --include" in err


def test_download_offline_env_fails_at_once_without_network(tmp_path):
    root = tmp_path / "ck"
    proc = subprocess.run(
        [sys.executable, "-m", "ditto_research.checkpoints", "download", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "HF_HUB_OFFLINE" in proc.stderr
    expected = f'hf download {HF_REPO} --include "ditto_cfg/*" --include "ditto_pytorch/*" --local-dir {root}'
    assert proc.stderr.rstrip().endswith(expected)
    assert not root.exists()


@pytest.mark.parametrize("where", ["file", "inside_file"])
def test_download_bad_destination_is_one_line(tmp_path, capsys, hub, where):
    (tmp_path / "f").write_text("x")
    root = tmp_path / "f" if where == "file" else tmp_path / "f" / "ck"
    assert main(["download", str(root)]) == 2
    err = capsys.readouterr().err
    expected = (
        "is a file; pass a folder" if where == "file" else f"cannot be created: {tmp_path / 'f'} is a file"
    )
    assert err.count("\n") == 1 and f"download destination {root} {expected}" in err
    assert not hub.info_calls


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root (or non-POSIX)"
)
def test_download_unwritable_destination_is_one_line(tmp_path, capsys, hub):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert main(["download", str(locked / "ck")]) == 2
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"download destination {locked} is not writable" in err
    assert not hub.info_calls


def test_download_help_lists_parts(capsys):
    with pytest.raises(SystemExit) as info:
        main(["download", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for name, part in DOWNLOAD_PARTS.items():
        assert f"{name} {' '.join(part.about.split())}" in out
    assert "comma-separated or repeated" in out and "(default: checkpoints)" in out
    assert hf_download_command() in out and "huggingface-cli" not in out
