"""Stitching network: a small MLP that nudges driving keypoints so the animated face stays aligned with the
source image around the crop border (LivePortrait's "S" module, the ``retarget_shoulder`` weights).

The official file ``stitch_network.pth`` holds several retargeting MLPs under top-level names; Ditto uses only
``"retarget_shoulder"``, whose keys may carry a DDP ``module.`` prefix. The exported ONNX / TensorRT model
takes inputs ``kp_source``, ``kp_driving`` and produces one output (named ``out`` in the TensorRT engine).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ditto_research.errors import CheckpointError, ConfigError

__all__ = ["StitchingNetwork", "stitching_state_dict_from_checkpoint", "STITCHING_CHECKPOINT_KEY"]

STITCHING_CHECKPOINT_KEY = "retarget_shoulder"


class StitchingNetwork(nn.Module):
    """MLP on concat(flat kp_source, flat kp_driving) -> per-keypoint offsets plus one shared (tx, ty).

    With K keypoints the input is 2 * 3K wide and the output 3K + 2: the first 3K values are added to the
    driving keypoints, the last two to the x and y of every keypoint. Official sizes: K = 21, 126 -> 128 ->
    128 -> 64 -> 65, ReLU between layers (``mlp.0/2/4/6`` in the checkpoint).
    """

    def __init__(
        self,
        input_size: int = 126,
        hidden_sizes: Sequence[int] = (128, 128, 64),
        output_size: int = 65,
    ) -> None:
        super().__init__()
        if input_size % 6 != 0 or output_size != input_size // 2 + 2 or not hidden_sizes:
            raise ConfigError(
                f"stitching network: input_size={input_size}, output_size={output_size} do not describe "
                "K keypoints (input 6K, output 3K + 2), or hidden_sizes is empty"
            )
        widths = [input_size, *hidden_sizes]
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """kp_source, kp_driving (B, K, 3) -> stitched driving keypoints (B, K, 3)."""
        batch, num_kp = kp_driving.shape[:2]
        delta = self.mlp(torch.cat([kp_source.reshape(batch, -1), kp_driving.reshape(batch, -1)], dim=1))
        delta_kp = delta[:, : 3 * num_kp].reshape(batch, num_kp, 3)
        # (tx, ty, 0): adding an exact zero to z keeps the reference's two-step float arithmetic.
        delta_xy = F.pad(delta[:, 3 * num_kp : 3 * num_kp + 2], (0, 1)).reshape(batch, 1, 3)
        return kp_driving + delta_kp + delta_xy


def stitching_state_dict_from_checkpoint(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Official ``stitch_network.pth`` object -> state dict for :class:`StitchingNetwork`.

    Picks ``checkpoint["retarget_shoulder"]`` and deletes every ``"module."`` substring in its keys (not only
    a leading one), exactly as the reference loader does.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"stitching checkpoint: expected a dict with a '{STITCHING_CHECKPOINT_KEY}' entry, "
            f"got {type(checkpoint).__name__}; pass the official stitch_network.pth"
        )
    if STITCHING_CHECKPOINT_KEY not in checkpoint:
        found = ", ".join(repr(k) for k in list(checkpoint)[:8]) or "none"
        raise CheckpointError(
            f"stitching checkpoint has no '{STITCHING_CHECKPOINT_KEY}' entry (top-level keys: {found}); "
            "pass the official stitch_network.pth"
        )
    weights = checkpoint[STITCHING_CHECKPOINT_KEY]
    if not isinstance(weights, Mapping):
        raise CheckpointError(
            f"stitching checkpoint: '{STITCHING_CHECKPOINT_KEY}' should be a state dict, "
            f"got {type(weights).__name__}"
        )
    return {str(key).replace("module.", ""): value for key, value in weights.items()}
