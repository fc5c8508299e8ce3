"""The trained motion model as a file inference loads: ``lmdm.pth`` in the official layout.

``{"model_state_dict": state}``, the layout of ``lmdm_v0.4_hubert.pth`` and of the released trainer's
checkpoints, with the same 249 keys: ``model.lmdm_path=PATH`` runs it in inference with any model set of the
same LMDM size (``python -m ditto_research.infer model=tiny model.lmdm_path=run/lmdm.pth ...``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ditto_research.atomic import write_atomically

__all__ = ["save_lmdm"]


def save_lmdm(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s weights (CPU float32 copies) to ``path`` atomically, official layout."""
    state = {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}
    return write_atomically(Path(path), lambda f: torch.save({"model_state_dict": state}, f))
