"""load_network: every network by name, official file layouts round-trip strictly, bad checkpoints are
clear."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ditto_research.checkpoints import MODEL_FILES, find_problems
from ditto_research.errors import CheckpointError, ConfigError
from ditto_research.models import NETWORK_NAMES, load_network, state_dict_from_file


def save_official(name: str, module: torch.nn.Module, path: Path) -> None:
    """Write ``module`` the way the official ditto_pytorch/models/*.pth files are laid out."""
    state = module.state_dict()
    if name == "stitch_network":
        obj = {"retarget_shoulder": {f"module.{k}": v for k, v in state.items()}}
    elif name == "lmdm":
        obj = {"model_state_dict": state}
    else:
        obj = state
    torch.save(obj, path)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> tuple[Path, dict[str, torch.nn.Module]]:
    """A checkpoint root whose .pth files hold seeded full-size weights (the layout of the official files)."""
    root = tmp_path_factory.mktemp("ckpt")
    models = root / "ditto_pytorch" / "models"
    models.mkdir(parents=True)
    nets = {}
    for i, name in enumerate(NETWORK_NAMES):
        nets[name] = load_network(name, seed=100 + i)
        save_official(name, nets[name], models / MODEL_FILES[name])
    return root, nets


def test_names_are_the_checkpoint_stems():
    assert set(NETWORK_NAMES) == set(MODEL_FILES)


def test_all_six_build_at_full_size_in_eval_mode():
    # Load time is measured by benchmarks/load_networks.py, not asserted here.
    nets = {name: load_network(name) for name in NETWORK_NAMES}
    for net in nets.values():
        assert not net.training
        assert all(torch.isfinite(p).all() for p in net.parameters())


def test_random_init_is_seeded():
    a, b, c = (load_network("stitch_network", seed=s) for s in (1, 1, 2))
    for (k, va), vb, _vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))


def test_official_layout_round_trips_strictly(tiny_root):
    root, nets = tiny_root
    assert find_problems(root, ["models"], deep=True) == []
    for name in NETWORK_NAMES:
        loaded = load_network(name, root / "ditto_pytorch" / "models" / MODEL_FILES[name])
        for (k, v), v2 in zip(nets[name].state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(v, v2), f"{name}: {k}"


def test_stitch_file_keys_have_module_prefix_stripped(tiny_root):
    root, _ = tiny_root
    raw = torch.load(root / "ditto_pytorch" / "models" / "stitch_network.pth", weights_only=True)
    assert all(k.startswith("module.") for k in raw["retarget_shoulder"])
    state = state_dict_from_file("stitch_network", root / "ditto_pytorch" / "models" / "stitch_network.pth")
    assert not any("module." in k for k in state)


def test_lmdm_width_comes_from_the_checkpoint(tmp_path):
    lmdm = load_network("lmdm", cond_dim=1059)
    path = tmp_path / "lmdm.pth"
    save_official("lmdm", lmdm, path)
    assert load_network("lmdm", path).cond_dim == 1059
    with pytest.raises(CheckpointError, match=r"width 1059 .* give 1103"):
        load_network("lmdm", path, expected_cond_dim=1103)


def _corrupt(tmp_path: Path, name: str, edit) -> Path:
    state = load_network(name).state_dict()
    edit(state)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    return path


def test_missing_extra_and_misshaped_keys_are_named(tmp_path):
    path = _corrupt(
        tmp_path, "decoder", lambda s: s.pop("fc.weight") if "fc.weight" in s else s.pop(next(iter(s)))
    )
    with pytest.raises(CheckpointError, match=r"decoder.pth does not fit decoder: 1 missing key"):
        load_network("decoder", path)
    path = _corrupt(tmp_path, "appearance_extractor", lambda s: s.__setitem__("bogus.weight", torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\): bogus.weight"):
        load_network("appearance_extractor", path)

    def reshape(state):
        key = next(k for k, v in state.items() if v.dim() >= 2)
        state[key] = torch.zeros(3, 3)

    path = _corrupt(tmp_path, "motion_extractor", reshape)
    with pytest.raises(CheckpointError, match=r"mis-shaped .*\[3, 3\] \(expected"):
        load_network("motion_extractor", path)


def test_truncated_wrong_format_and_code_are_refused(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(load_network("stitch_network").state_dict(), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut.pth.*(truncated|not a PyTorch)"):
        load_network("warp_network", cut)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_network("decoder", text)
    evil = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "payload": Path("/")}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_network("lmdm", evil)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_network("decoder", tmp_path / "nope.pth")


def test_wrong_layout_for_the_network(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(load_network("stitch_network").state_dict(), path)
    with pytest.raises(CheckpointError, match="not a lmdm file"):
        load_network("lmdm", path)
    with pytest.raises(CheckpointError, match="not a stitch_network file"):
        load_network("stitch_network", path)


def test_unknown_name_and_tiny_with_checkpoint():
    with pytest.raises(ConfigError, match="appearance_extractor, motion_extractor"):
        load_network("renderer")
    with pytest.raises(ConfigError, match="tiny"):
        load_network("decoder", "x.pth", tiny=True)
