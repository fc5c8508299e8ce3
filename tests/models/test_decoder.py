"""SPADEDecoder: checkpoint interface, golden parity, and the rewrites checked against plain reference math.

The plain reference (``reference_decoder``) is written here from raw parameters with the operations the
official module uses (nearest interpolation of the label map, InstanceNorm2d, eval spectral norm), so the
fused / sub-pixel / folded / cached paths of the implementation are checked on small general shapes too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ditto_research.errors import ConfigError, InputError
from ditto_research.models.decoder import (
    SPADE,
    SPADEDecoder,
    SPADEResnetBlock,
    SpectralNormConv2d,
    conv3x3_on_nearest_upsampled,
)
from tests.helpers import max_abs_err

# 10x the golden's fp64_maxabs_out (the reference's own float32 noise, 2.9e-6): measured 1.08e-5 = 3.8x it
# (the sub-pixel / folded rewrites sum in another order), so 4x would leave no margin.
YARDSTICK_MULTIPLE = 10.0
SMALL_TOL = 2e-5  # float32 rounding of the rearranged sums on O(1) activations


def tiny_decoder(seed: int = 0, upscale: int | None = 2) -> SPADEDecoder:
    """Narrow variant: 16 feature channels, 32 in the middle blocks, 8 SPADE hidden channels."""
    torch.manual_seed(seed)
    model = SPADEDecoder(
        upscale=upscale, max_features=16, block_expansion=8, out_channels=8, spade_hidden_channels=8
    )
    return model.eval()


# ---- plain reference math (official operation order, no rewrites) ----


def reference_sn_weight(conv: SpectralNormConv2d) -> torch.Tensor:
    matrix = conv.weight_orig.reshape(conv.weight_orig.shape[0], -1)
    return conv.weight_orig / torch.dot(conv.weight_u, torch.mv(matrix, conv.weight_v))


def reference_spade(spade: SPADE, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
    normalized = nn.InstanceNorm2d(x.shape[1], affine=False)(x)
    segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
    shared = spade.mlp_shared[0]
    actv = F.relu(F.conv2d(segmap, shared.weight, shared.bias, padding=1))
    gamma = F.conv2d(actv, spade.mlp_gamma.weight, spade.mlp_gamma.bias, padding=1)
    beta = F.conv2d(actv, spade.mlp_beta.weight, spade.mlp_beta.bias, padding=1)
    return normalized * (1 + gamma) + beta


def reference_block(block: SPADEResnetBlock, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
    if block.learned_shortcut:
        shortcut = F.conv2d(reference_spade(block.norm_s, x, segmap), reference_sn_weight(block.conv_s))
    else:
        shortcut = x
    dx = F.leaky_relu(reference_spade(block.norm_0, x, segmap), 0.2)
    dx = F.conv2d(dx, reference_sn_weight(block.conv_0), block.conv_0.bias, padding=1)
    dx = F.leaky_relu(reference_spade(block.norm_1, dx, segmap), 0.2)
    dx = F.conv2d(dx, reference_sn_weight(block.conv_1), block.conv_1.bias, padding=1)
    return shortcut + dx


def reference_decoder(model: SPADEDecoder, feature: torch.Tensor) -> torch.Tensor:
    x = model.fc(feature)
    for index in range(6):
        x = reference_block(getattr(model, f"G_middle_{index}"), x, feature)
    x = reference_block(model.up_0, nn.Upsample(scale_factor=2)(x), feature)
    x = reference_block(model.up_1, nn.Upsample(scale_factor=2)(x), feature)
    return torch.sigmoid(model.conv_img(F.leaky_relu(x, 0.2)))


# ---- checkpoint interface and golden ----


def test_golden_parity(det_init, load_golden) -> None:
    golden = load_golden("decoder")
    model = SPADEDecoder()
    model.load_state_dict(det_init.fill_state_dict(model, int(golden["seed"])), strict=True)
    model.eval()
    out = model(torch.from_numpy(golden["feature"]))
    err, tol = max_abs_err(out, golden["out"]), YARDSTICK_MULTIPLE * float(golden["fp64_maxabs_out"])
    assert err <= tol, f"out max abs err {err:.3g} > {tol:.3g}"


def test_spectral_conv_matches_torch_spectral_norm_in_eval() -> None:
    torch.manual_seed(0)
    ours = SpectralNormConv2d(6, 5, 3, padding=1)
    official = nn.utils.spectral_norm(nn.Conv2d(6, 5, 3, padding=1))
    official.load_state_dict(ours.state_dict(), strict=True)
    # Random u, v far from the singular vectors: eval must use them as stored (no power iteration).
    with torch.no_grad():
        ours.weight_u.copy_(F.normalize(torch.rand(5) + 0.5, dim=0))
        ours.weight_v.copy_(F.normalize(torch.rand(54) + 0.5, dim=0))
    official.load_state_dict(ours.state_dict(), strict=True)
    official.eval()
    x = torch.randn(2, 6, 7, 9)
    assert max_abs_err(ours(x), official(x).numpy()) < 1e-6
    assert torch.equal(official.weight_u, ours.weight_u)  # its eval forward left u alone, as ours does


# ---- rewrites against the plain reference, small shapes ----


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_conv_on_nearest_upsampled_matches_upsample_then_conv(scale: int) -> None:
    gen = torch.Generator().manual_seed(scale)
    label = torch.randn(2, 5, 5, 7, generator=gen)
    weight = torch.randn(6, 5, 3, 3, generator=gen)
    bias = torch.randn(6, generator=gen)
    expected = F.conv2d(F.interpolate(label, scale_factor=scale, mode="nearest"), weight, bias, padding=1)
    ours = conv3x3_on_nearest_upsampled(label, weight, bias, scale)
    assert ours.shape == (2, 6, 5 * scale, 7 * scale)
    assert max_abs_err(ours, expected.numpy()) < 1e-5


def test_spade_and_blocks_match_reference_at_other_sizes() -> None:
    torch.manual_seed(1)
    spade = SPADE(6, 4, hidden_channels=5).eval()
    x, segmap = torch.randn(2, 6, 12, 20), torch.randn(2, 4, 3, 5)
    assert max_abs_err(spade(x, segmap), reference_spade(spade, x, segmap).numpy()) < SMALL_TOL
    for in_channels, out_channels in ((6, 6), (6, 3), (3, 6)):
        block = SPADEResnetBlock(in_channels, out_channels, 4, hidden_channels=5).eval()
        # s = 4 (sub-pixel path), s = 1, and a non-integer ratio (nearest-resize fallback)
        for size in ((12, 20), (3, 5), (7, 9)):
            x = torch.randn(2, in_channels, *size)
            expected = reference_block(block, x, segmap)
            err = max_abs_err(block(x, segmap), expected.numpy())
            assert err < SMALL_TOL, (in_channels, out_channels, size, err)


@pytest.mark.parametrize("upscale", [2, 1])
def test_tiny_decoder_matches_reference(upscale: int) -> None:
    model = tiny_decoder(upscale=upscale)
    feature = torch.randn(2, 16, 6, 5, generator=torch.Generator().manual_seed(2))
    out = model(feature)
    factor = 4 * max(upscale, 1)  # two nearest x2 upsamplings, then the pixel shuffle
    assert out.shape == (2, 3, 6 * factor, 5 * factor)
    assert max_abs_err(out, reference_decoder(model, feature).numpy()) < SMALL_TOL
    assert float(out.min()) > 0.0 and float(out.max()) < 1.0


def test_cached_weights_follow_parameter_changes() -> None:
    model = tiny_decoder(seed=0)
    feature = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(3))
    before = model(feature)
    assert torch.equal(model(feature), before)  # second call served from the caches
    other = tiny_decoder(seed=1)
    model.load_state_dict(other.state_dict())
    reloaded = model(feature)
    assert max_abs_err(reloaded, other(feature).numpy()) == 0.0
    assert max_abs_err(reloaded, before.numpy()) > 1e-4
    with torch.no_grad():  # in-place edits of a weight and of a spectral-norm vector
        model.up_1.norm_s.mlp_beta.weight.mul_(2.0)
        model.G_middle_0.conv_0.weight_u.neg_()
    assert max_abs_err(model(feature), reference_decoder(model, feature).numpy()) < SMALL_TOL
    model.up_0.conv_1.weight_orig.data[0].mul_(-3.0)  # .data writes are invisible to version counters
    model.clear_weight_caches()
    assert max_abs_err(model(feature), reference_decoder(model, feature).numpy()) < SMALL_TOL


def test_gradients_flow_with_grad_enabled() -> None:
    model = tiny_decoder().train()
    feature = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(4))
    with torch.enable_grad():
        model(feature).square().mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert float(grads["up_1.conv_s.weight_orig"].abs().sum()) > 0.0
    assert float(grads["G_middle_3.norm_1.mlp_shared.0.weight"].abs().sum()) > 0.0


def test_rejects_bad_input_and_config() -> None:
    model = tiny_decoder()
    with pytest.raises(InputError, match=r"\(B, 16, H, W\)"):
        model(torch.randn(1, 8, 4, 4))
    with pytest.raises(ConfigError, match="num_down_blocks"):
        SPADEDecoder(num_down_blocks=0)
