"""The six Ditto networks by checkpoint stem, and the one loading API the rest of the code uses.

    load_network("decoder")                                   # full size, seeded random weights
    load_network("decoder", "checkpoints/ditto_pytorch/models/decoder.pth")
    load_network("lmdm", ckpt, expected_cond_dim=1103)        # width checked against the condition flags

Checkpoint files are read with ``torch.load(weights_only=True)`` and loaded strictly; any mismatch is one
:class:`CheckpointError` naming the file and every missing, unexpected or mis-shaped key.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ditto_research.errors import CheckpointError, ConfigError
from ditto_research.models.init import init_random_


def _plain(obj: Any) -> Mapping[str, torch.Tensor]:
    return obj


def _lmdm_state(obj: Any) -> Mapping[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or "model_state_dict" not in obj:
        raise KeyError("expected a dict with key 'model_state_dict' (the official LMDM file layout)")
    return obj["model_state_dict"]


def _stitch_state(obj: Any) -> Mapping[str, torch.Tensor]:
    from ditto_research.models.stitching import stitching_state_dict_from_checkpoint

    return stitching_state_dict_from_checkpoint(obj)


@dataclass(frozen=True)
class NetworkSpec:
    """How to build one network and read its official checkpoint file."""

    name: str
    filename: str
    module: str
    class_name: str
    extract: Callable[[Any], Mapping[str, torch.Tensor]] = _plain
    # Constructor overrides of the narrow `tiny` variant (same stage interfaces, random weights only).
    tiny_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self, **kwargs: Any) -> nn.Module:
        cls = getattr(importlib.import_module(self.module), self.class_name)
        return cls(**kwargs)


NETWORKS: dict[str, NetworkSpec] = {
    spec.name: spec
    for spec in (
        NetworkSpec(
            "appearance_extractor",
            "appearance_extractor.pth",
            "ditto_research.models.appearance",
            "AppearanceFeatureExtractor",
            tiny_kwargs={"block_expansion": 8, "max_features": 16, "reshape_channel": 8, "reshape_depth": 2},
        ),
        NetworkSpec(
            "motion_extractor",
            "motion_extractor.pth",
            "ditto_research.models.motion_extractor",
            "MotionExtractor",
            tiny_kwargs={"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)},
        ),
        NetworkSpec(
            "warp_network",
            "warp_network.pth",
            "ditto_research.models.warping",
            "WarpingNetwork",
            tiny_kwargs={
                "block_expansion": 8,
                "max_features": 16,
                "reshape_channel": 8,
                "reshape_depth": 2,
                "dense_block_expansion": 4,
                "dense_max_features": 16,
                "dense_num_blocks": 2,
                "compress": 1,
            },
        ),
        NetworkSpec(
            "decoder",
            "decoder.pth",
            "ditto_research.models.decoder",
            "SPADEDecoder",
            tiny_kwargs={
                "block_expansion": 8,
                "max_features": 32,
                "out_channels": 16,
                "spade_hidden_channels": 16,
            },
        ),
        NetworkSpec(
            "stitch_network",
            "stitch_network.pth",
            "ditto_research.models.stitching",
            "StitchingNetwork",
            extract=_stitch_state,
        ),
        NetworkSpec(
            "lmdm",
            "lmdm_v0.4_hubert.pth",
            "ditto_research.models.lmdm",
            "LMDM",
            extract=_lmdm_state,
            tiny_kwargs={"latent_dim": 64, "ff_size": 128, "num_layers": 2, "num_heads": 4},
        ),
    )
}
NETWORK_NAMES: tuple[str, ...] = tuple(NETWORKS)


def get_spec(name: str) -> NetworkSpec:
    if name not in NETWORKS:
        raise ConfigError(f"unknown network {name!r}; choose one of: {', '.join(NETWORK_NAMES)}")
    return NETWORKS[name]


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors naming the file (never executes code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): download it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError/... for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e):
            reason = "it contains Python objects other than tensors (refused: loading it could run code)"
        elif isinstance(e, EOFError) or "failed finding central directory" in str(e) or "truncated" in str(e):
            reason = f"the file is truncated or corrupt ({first})"
        else:
            reason = f"it is not a PyTorch checkpoint ({first})"
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}; download it again") from e


def state_dict_from_file(name: str, path: str | Path) -> dict[str, torch.Tensor]:
    """Read the official file for network ``name`` and return its state dict (layout unwrapped)."""
    spec = get_spec(name)
    obj = read_checkpoint(path)
    try:
        state = spec.extract(obj)
    except (KeyError, TypeError, CheckpointError) as e:
        raise CheckpointError(f"checkpoint {path} is not a {name} file: {e}") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"checkpoint {path} is not a {name} file: expected a mapping of names to tensors"
        )
    return dict(state)


def describe_mismatch(module: nn.Module, state: Mapping[str, torch.Tensor], limit: int = 4) -> str | None:
    """A one-line summary of missing / unexpected / mis-shaped keys, or None when ``state`` fits exactly."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {list(state[k].shape)} (expected {list(expected[k].shape)})"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            more = f", ... {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"{len(items)} {label} key(s): {', '.join(items[:limit])}{more}")
    return "; ".join(parts) or None


def lmdm_cond_dim(state: Mapping[str, torch.Tensor]) -> int:
    """Condition width of an LMDM state dict (``cond_projection.weight`` is [latent, cond_dim])."""
    weight = state.get("cond_projection.weight")
    if weight is None or weight.dim() != 2:
        raise CheckpointError(
            "LMDM state dict has no 2-D 'cond_projection.weight'; is this an LMDM checkpoint?"
        )
    return int(weight.shape[1])


def load_network(
    name: str,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    seed: int = 0,
    tiny: bool = False,
    expected_cond_dim: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build network ``name`` (a checkpoint stem) in eval mode.

    Args:
        name: appearance_extractor | motion_extractor | warp_network | decoder | stitch_network | lmdm.
        checkpoint: official ``.pth`` file; None = seeded random weights at full size (or tiny).
        device: where the module lives.
        seed: seed of the random weights (ignored with a checkpoint).
        tiny: build the narrow variant (random weights; the LMDM's may come from a checkpoint of that size,
            e.g. one trained with model=tiny).
        expected_cond_dim: LMDM only: the width the configured condition flags produce (1103 with all four);
            a checkpoint of another width is a CheckpointError that says which flags would fit.
        kwargs: extra constructor arguments (e.g. ``guidance_weight`` for the LMDM).
    """
    spec = get_spec(name)
    if tiny and checkpoint is not None and name != "lmdm":
        raise ConfigError(
            "the tiny variant has no checkpoint; use model=ditto for checkpoints, model=tiny without"
        )
    build_kwargs = {**(spec.tiny_kwargs if tiny else {}), **kwargs}
    state = None
    if checkpoint is not None:
        state = state_dict_from_file(name, checkpoint)
        if name == "lmdm":
            width = lmdm_cond_dim(state)
            if expected_cond_dim is not None and width != expected_cond_dim:
                raise CheckpointError(
                    f"checkpoint {checkpoint} has LMDM condition width {width} but the configured condition "
                    f"flags give {expected_cond_dim} (1024 audio + 8 emo + 2 eye_open + 6 eye_ball + 63 sc); "
                    "set motion.use_* to match the checkpoint"
                )
            build_kwargs["cond_dim"] = width
    elif name == "lmdm" and expected_cond_dim is not None:
        build_kwargs.setdefault("cond_dim", expected_cond_dim)
    module = spec.build(**build_kwargs)
    if state is None:
        init_random_(module, seed)
    else:
        problem = describe_mismatch(module, state)
        if problem:
            raise CheckpointError(f"checkpoint {checkpoint} does not fit {name}: {problem}")
        module.load_state_dict(state, strict=True)
    return module.to(device).eval()
