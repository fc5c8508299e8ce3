"""Every network's state dict equals the official checkpoint's keys, shapes and dtypes (state_dict_keys.tsv),
and det_init's fill of it (the seed the table names, seed 0 in the public set) gives the same tensors as the
reference's (the fill sums)."""

from __future__ import annotations

import pytest

from ditto_research.models import load_network
from tests.helpers import keys_table_seed, official_rows

# network name -> (module name in state_dict_keys.tsv, build kwargs, number of keys, det_init skip)
CASES = {
    "appearance_extractor": ("AppearanceFeatureExtractor", {}, 107, ()),
    "motion_extractor": ("MotionExtractor", {}, 212, ()),
    "warp_network": ("WarpingNetwork", {}, 97, ()),
    "decoder": ("SPADEDecoder", {}, 182, ()),
    "stitch_network": ("StitchingNetwork", {}, 8, ()),
    "lmdm": ("LMDM_MotionDecoder_ad1059", {"cond_dim": 1059}, 249, ("rotary.freqs",)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_keys_shapes_dtypes_and_fill_match_official(name, golden_dir, det_init):
    module_name, kwargs, count, skip = CASES[name]
    rows = official_rows(golden_dir, module_name)
    net = load_network(name, **kwargs)
    state = net.state_dict()
    assert len(rows) == count and sorted(state) == sorted(rows)
    for key, (shape, dtype, _) in rows.items():
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype).removeprefix("torch.") == dtype, key
    filled = det_init.fill_state_dict(net, keys_table_seed(golden_dir), skip=skip)
    for key, (_, _, ref_sum) in rows.items():
        if key.endswith(skip) and skip:
            continue
        # The same float64 sum of the same tensor as the table's: measured bit-identical for every key.
        assert float(filled[key].double().sum()) == ref_sum, key


def test_lmdm_1103_differs_only_in_cond_projection():
    wide, narrow = load_network("lmdm").state_dict(), load_network("lmdm", cond_dim=1059).state_dict()
    assert sorted(wide) == sorted(narrow)
    differing = [k for k in wide if wide[k].shape != narrow[k].shape]
    assert differing == ["cond_projection.weight"] and wide[differing[0]].shape[1] == 1103
