"""Small assertion helpers shared by the tests (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

import re

import numpy as np
import torch


def to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def max_abs_err(ours: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| after checking shapes agree."""
    ours_np, ref = to_numpy(ours), np.asarray(ref)
    assert ours_np.shape == ref.shape, f"shape {ours_np.shape} != golden {ref.shape}"
    return float(np.abs(ours_np.astype(np.float64) - ref.astype(np.float64)).max())


def max_rel_err(ours: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (the parity metric the issues state)."""
    scale = float(np.abs(np.asarray(ref)).max()) or 1.0
    return max_abs_err(ours, ref) / scale


def keys_table_seed(golden_dir) -> int:
    """The det_init seed whose fill sums ``state_dict_keys.tsv`` lists (its last header:
    ``sum_of_fill_seed0``)."""
    header = (golden_dir / "state_dict_keys.tsv").read_text().splitlines()[0].split("\t")
    match = re.fullmatch(r"sum_of_fill_seed(\d+)", header[-1])
    assert match, f"state_dict_keys.tsv: last column {header[-1]!r} does not name the fill seed"
    return int(match.group(1))


def official_rows(golden_dir, module: str) -> dict[str, tuple[list[int], str, float]]:
    """``state_dict_keys.tsv`` rows of one module: key -> (shape, dtype, sum of the fill, see
    keys_table_seed)."""
    rows = {}
    for line in (golden_dir / "state_dict_keys.tsv").read_text().splitlines()[1:]:
        name, key, shape, dtype, fill_sum = line.split("\t")
        if name == module:
            rows[key] = ([int(s) for s in shape.strip("[]").split(",") if s.strip()], dtype, float(fill_sum))
    return rows
