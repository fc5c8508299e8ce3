"""SPADE decoder (LivePortrait / Ditto "G"): warped appearance feature -> RGB image.

The warping network's output (B, 256, 64, 64) is both the input of the generator and, at every resolution, its
SPADE label map. Six residual blocks run at 64x64; two more run after nearest x2 upsamplings; a final conv +
PixelShuffle + sigmoid gives (B, 3, 512, 512) in (0, 1).

Checkpoint interface (names kept from the official ``decoder.pth``, 182 keys): ``fc``, ``G_middle_0..5``,
``up_0``, ``up_1``, ``conv_img.0``; inside a block ``conv_0``, ``conv_1``, ``conv_s`` (spectral-normed, stored
as ``weight_orig`` / ``weight_u`` / ``weight_v``) and ``norm_0``, ``norm_1``, ``norm_s`` (SPADE, with
``mlp_shared.0``, ``mlp_gamma``, ``mlp_beta``).

The forward equals the reference up to float32 rounding, but is rearranged to do less work:

- the label-map convs of all SPADE layers of a block read the same map, so they run as one wider conv, and
  each SPADE's gamma and beta convs run as one conv;
- "nearest-upsample the label map by s, then 3x3 conv" runs at the label map's own resolution as s*s 2x2
  sub-pixel convs plus a pixel shuffle (2.25x fewer multiply-adds, no upsampled map: :func:`subpixel_conv`);
- the 1x1 shortcut conv is folded into norm_s's beta conv (see :meth:`SPADEResnetBlock._shortcut_weights`);
- derived weights (spectral normalisation, stacked and folded kernels) are cached in inference until a
  parameter changes (:class:`DerivedWeightCache`).

Exports with a dynamic batch (the TorchScript exporter) need the channel and spatial sizes as constants: the
sub-pixel scale feeds pixel_shuffle, and the exporter's instance norm needs the channel count, which it loses
behind a Resize. Sizes are therefore read as Python ints (:func:`static_sizes`) and the nearest x2 upsampling
is traced as expand + reshape (:func:`upsample_nearest`); both are no-ops for the eager arithmetic.

Shape legend: B batch, C channels, H x W the label map, s the integer upsampling factor of a block.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ditto_research.errors import ConfigError, InputError

__all__ = [
    "SPADE",
    "DerivedWeightCache",
    "SPADEDecoder",
    "SPADEResnetBlock",
    "SpectralNormConv2d",
    "conv3x3_on_nearest_upsampled",
    "static_sizes",
    "subpixel_conv",
    "subpixel_conv3x3_weights",
    "upsample_nearest",
]

LEAKY_SLOPE = 0.2  # the residual blocks' activation (and the one before conv_img)
INSTANCE_NORM_EPS = 1e-5  # nn.InstanceNorm2d default, affine=False, no running stats

_Value = TypeVar("_Value")


class DerivedWeightCache(Generic[_Value]):
    """Keeps a value computed from parameters / buffers until one of them changes.

    A source changes when its storage, version counter (bumped by every in-place write: ``load_state_dict``,
    an optimizer step, ``copy_`` under ``no_grad``), dtype or device does. Writes through ``tensor.data`` do
    not bump the counter: call :meth:`clear` after those. The cache is bypassed while autograd records
    through the sources, under tracing / compilation / export, and for tensor subclasses, so training and
    exported graphs always see the plain computation.
    """

    def __init__(self) -> None:
        self._entry: tuple[tuple[object, ...], _Value] | None = None  # (key, value), replaced as one object

    def clear(self) -> None:
        self._entry = None

    def get(
        self, sources: Sequence[torch.Tensor], compute: Callable[[], _Value], tag: object = None
    ) -> _Value:
        """compute(), or the stored result while ``sources`` (and ``tag``) are unchanged."""
        if not _is_cacheable(sources):
            return compute()
        versions = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        key = (tag, torch.is_inference_mode_enabled(), versions)
        entry = self._entry
        if entry is None or entry[0] != key:
            entry = (key, compute())
            self._entry = entry
        return entry[1]


def _is_cacheable(sources: Sequence[torch.Tensor]) -> bool:
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
        return False
    return all(type(t) in (torch.Tensor, nn.Parameter) and not t.is_inference() for t in sources)


class SpectralNormConv2d(nn.Module):
    """Conv2d with an eval-mode spectral-normalised weight, W = weight_orig / sigma, sigma = u . (W_mat v).

    Same state-dict layout as ``torch.nn.utils.spectral_norm(nn.Conv2d(...))`` (``weight_orig``, ``bias``,
    ``weight_u`` [C_out], ``weight_v`` [C_in * k * k]) and the same eval arithmetic, but without hooks: u and
    v are used exactly as stored (no power iteration in forward, in train mode either), so the module is
    deterministic and exports as plain ops. Call :meth:`power_iteration_` to refine u and v explicitly.

    (B, C_in, H, W) -> (B, C_out, H', W')
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.padding = padding
        weight = torch.empty(out_channels, in_channels, kernel_size, kernel_size)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Conv2d's default init
        self.weight_orig = nn.Parameter(weight)
        if bias:
            bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
            self.bias: nn.Parameter | None = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
        self.register_buffer("weight_u", F.normalize(torch.randn(out_channels), dim=0))
        self.register_buffer("weight_v", F.normalize(torch.randn(weight[0].numel()), dim=0))
        self.weight_cache: DerivedWeightCache[torch.Tensor] = DerivedWeightCache()
        self.power_iteration_(15)

    def normalized_weight(self) -> torch.Tensor:
        """weight_orig / sigma, (C_out, C_in, k, k); cached until weight_orig, u or v change."""
        sources = (self.weight_orig, self.weight_u, self.weight_v)
        return self.weight_cache.get(sources, self._compute_normalized_weight)

    def _compute_normalized_weight(self) -> torch.Tensor:
        # Same ops as torch.nn.utils.spectral_norm in eval: sigma = dot(u, mv(W_mat, v)).
        matrix = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        sigma = torch.dot(self.weight_u, torch.mv(matrix, self.weight_v))
        return self.weight_orig / sigma

    @torch.no_grad()
    def power_iteration_(self, n_iterations: int = 1) -> None:
        """Move u, v towards the top singular vectors of weight_orig (what spectral_norm does in training)."""
        matrix = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        for _ in range(n_iterations):
            self.weight_v.copy_(F.normalize(torch.mv(matrix.t(), self.weight_u), dim=0, eps=1e-12))
            self.weight_u.copy_(F.normalize(torch.mv(matrix, self.weight_v), dim=0, eps=1e-12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)


def static_sizes(x: torch.Tensor) -> tuple[int, ...]:
    """x's sizes as Python ints, also while tracing for export (where shapes are traced values).

    Only for sizes an export keeps fixed (channels, height, width: only the batch axis is ever dynamic).
    """
    return tuple(int(size) for size in x.shape)


def upsample_nearest(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Nearest upsampling by ``scale`` (a power of two): (B, C, H, W) -> (B, C, s*H, s*W).

    ``F.interpolate(x, scale_factor=s, mode="nearest")`` in eager. Traced for export it is written as expand +
    reshape with constant C, H, W (each pixel copied into an s x s tile: the same values bit for bit), so that
    a dynamic-batch graph keeps the channel count the exporter's instance norm needs.
    """
    if not torch.jit.is_tracing():
        return F.interpolate(x, scale_factor=float(scale), mode="nearest")
    _, channels, height, width = static_sizes(x)
    tiles = x[:, :, :, None, :, None].expand(-1, -1, -1, scale, -1, scale)
    return tiles.reshape(x.shape[0], channels, scale * height, scale * width)


def _subpixel_tap_map(scale: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(s, 2, 3) 0/1 matrix T: T[slot, r, dy + 1] = 1 when, for output row phase a, kernel tap dy in
    {-1, 0, +1} reads the r-th of the two source rows the phase's 2x2 kernel covers.

    Upsampled row s*i + a + dy is source row i + floor((a + dy) / s): rows (i-1, i) for a = 0 and (i, i+1)
    otherwise (for 0 < a < s-1 only row i is used). Slots hold the phases in the order a = 1, ..., s-1, 0,
    so that after the pixel shuffle every phase sits at the same offset, s - 1 (see :func:`subpixel_conv`).
    """
    rows = []
    for slot in range(scale):
        phase = (slot + 1) % scale
        first_row = -1 if phase == 0 else 0
        lands_on = [(phase + dy) // scale - first_row for dy in (-1, 0, 1)]
        rows.append([[float(r == row) for r in lands_on] for row in (0, 1)])
    return torch.tensor(rows, dtype=dtype, device=device)  # one constant when traced for export


def subpixel_conv3x3_weights(
    weight: torch.Tensor, bias: torch.Tensor | None, scale: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Phase kernels of a 3x3 conv applied after nearest upsampling by ``scale`` (see :func:`subpixel_conv`).

    weight (C_out, C_in, 3, 3), bias (C_out,) -> weight (C_out*s*s, C_in, 2, 2), bias (C_out*s*s,); output
    channel order (C_out, phase row, phase column) is what pixel_shuffle expects. Scale 1 returns the inputs.
    """
    if scale == 1:
        return weight, bias
    taps = _subpixel_tap_map(scale, weight.device, weight.dtype)
    phase_weight = torch.einsum("apy,oiyx,bqx->oabipq", taps, weight, taps).reshape(-1, weight.shape[1], 2, 2)
    phase_bias = None if bias is None else bias.repeat_interleave(scale * scale)
    return phase_weight, phase_bias


def subpixel_conv(
    label: torch.Tensor, phase_weight: torch.Tensor, phase_bias: torch.Tensor | None, scale: int
) -> torch.Tensor:
    """Run the phase kernels of :func:`subpixel_conv3x3_weights`: (B, C_in, H, W) -> (B, C_out, s*H, s*W).

    Equals ``F.conv2d(F.interpolate(label, scale_factor=s), weight, bias, padding=1)`` for the original 3x3
    ``weight``, with 2.25x fewer multiply-adds and no upsampled map. Every output pixel (s*i + a, s*j + b)
    of the upsampled conv reads only the 2x2 source pixels around (i, j) on its side, so phase (a, b) is a
    2x2 conv of the label map with the 3x3 taps summed per source pixel. All s*s phases run as one conv with
    padding 1; the pixel shuffle interleaves them, and a crop of s - 1 on the leading side aligns the
    rotated phase order (see :func:`_subpixel_tap_map`). Zero padding agrees: a tap outside the upsampled
    map reads a source pixel outside the label map.
    """
    if scale == 1:
        return F.conv2d(label, phase_weight, phase_bias, padding=1)
    height, width = static_sizes(label)[-2:]
    phases = F.conv2d(label, phase_weight, phase_bias, padding=1)  # (B, C_out*s*s, H+1, W+1)
    shuffled = F.pixel_shuffle(phases, scale)  # (B, C_out, s*(H+1), s*(W+1))
    offset = scale - 1
    return shuffled[:, :, offset : offset + scale * height, offset : offset + scale * width]


def conv3x3_on_nearest_upsampled(
    label: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: int
) -> torch.Tensor:
    """``F.conv2d(F.interpolate(label, scale_factor=scale), weight, bias, padding=1)``, computed by
    :func:`subpixel_conv`.

    label (B, C_in, H, W), weight (C_out, C_in, 3, 3) -> (B, C_out, s*H, s*W). ``scale`` is a power of two
    (nearest interpolation then reads source index dst // s exactly).
    """
    return subpixel_conv(label, *subpixel_conv3x3_weights(weight, bias, scale), scale)


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: instance-normalise x, then scale and shift it per pixel with
    (gamma, beta) predicted from the label map (``mlp_shared`` -> ReLU -> ``mlp_gamma`` / ``mlp_beta``).

    x (B, C, H, W), segmap (B, C_label, h, w) -> (B, C, H, W); the label map is nearest-resized to (H, W).
    """

    def __init__(self, norm_channels: int, label_channels: int, hidden_channels: int = 128) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, hidden_channels, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden_channels, norm_channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden_channels, norm_channels, 3, padding=1)
        self.weight_cache: DerivedWeightCache[tuple[torch.Tensor, torch.Tensor]] = DerivedWeightCache()

    @property
    def label_conv(self) -> nn.Conv2d:
        """The label-map conv ``mlp_shared.0`` (C_label -> hidden, 3x3)."""
        return self.mlp_shared[0]

    def _gamma_beta_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """mlp_gamma and mlp_beta stacked into one conv: weight (2C, hidden, 3, 3), bias (2C,)."""
        sources = (self.mlp_gamma.weight, self.mlp_gamma.bias, self.mlp_beta.weight, self.mlp_beta.bias)
        return self.weight_cache.get(
            sources, lambda: (torch.cat([sources[0], sources[2]]), torch.cat([sources[1], sources[3]]))
        )

    def modulate(self, normalized: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """normalized * (1 + gamma) + beta.

        normalized (B, C, H, W) instance-normalised input; hidden (B, hidden, H, W) = ReLU(label conv).
        """
        weight, bias = self._gamma_beta_weights()
        gamma_beta = F.conv2d(hidden, weight, bias, padding=1)
        channels = normalized.shape[1]
        # narrow (not chunk): autograd allows the in-place +1 on a single view
        gamma, beta = gamma_beta.narrow(1, 0, channels), gamma_beta.narrow(1, channels, channels)
        return torch.addcmul(beta, normalized, gamma.add_(1.0))

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        segmap = F.interpolate(segmap, size=x.shape[-2:], mode="nearest")
        return self.modulate(F.instance_norm(x, eps=INSTANCE_NORM_EPS), self.mlp_shared(segmap))


class SPADEResnetBlock(nn.Module):
    """x + conv_1(act(norm_1(conv_0(act(norm_0(x)))))), with a learned shortcut conv_s(norm_s(x)) when the
    channel count changes. act = LeakyReLU(0.2); conv_* are 3x3 (conv_s 1x1, no bias), spectral-normed.

    x (B, C_in, s*H, s*W), segmap (B, C_label, H, W) -> (B, C_out, s*H, s*W)
    """

    def __init__(
        self, in_channels: int, out_channels: int, label_channels: int, hidden_channels: int = 128
    ) -> None:
        super().__init__()
        middle_channels = min(in_channels, out_channels)
        self.learned_shortcut = in_channels != out_channels
        self.hidden_channels = hidden_channels
        self.conv_0 = SpectralNormConv2d(in_channels, middle_channels, 3, padding=1)
        self.conv_1 = SpectralNormConv2d(middle_channels, out_channels, 3, padding=1)
        self.norm_0 = SPADE(in_channels, label_channels, hidden_channels)
        self.norm_1 = SPADE(middle_channels, label_channels, hidden_channels)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(in_channels, out_channels, 1, bias=False)
            self.norm_s = SPADE(in_channels, label_channels, hidden_channels)
        self.shortcut_cache: DerivedWeightCache[tuple[torch.Tensor, torch.Tensor]] = DerivedWeightCache()
        self.weight_cache: DerivedWeightCache[tuple[torch.Tensor, torch.Tensor | None]] = DerivedWeightCache()

    def spade_layers(self) -> list[SPADE]:
        """norm_0, norm_1 (and norm_s with a learned shortcut), in that order."""
        return [self.norm_0, self.norm_1] + ([self.norm_s] if self.learned_shortcut else [])

    def _label_weights(self, scale: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The label convs of all SPADE layers as one conv, in sub-pixel form for ``scale`` > 1."""
        convs = [spade.label_conv for spade in self.spade_layers()]
        sources = [tensor for conv in convs for tensor in (conv.weight, conv.bias)]

        def compute() -> tuple[torch.Tensor, torch.Tensor | None]:
            weight, bias = torch.cat(sources[0::2]), torch.cat(sources[1::2])
            return subpixel_conv3x3_weights(weight, bias, scale)

        return self.weight_cache.get(sources, compute, tag=scale)

    def label_hiddens(self, segmap: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        """ReLU(mlp_shared) of every SPADE layer on the label map nearest-resized to ``size``.

        segmap (B, C_label, H, W) -> list of (B, hidden, *size), in :meth:`spade_layers` order.
        """
        height, width = static_sizes(segmap)[-2:]
        size = (int(size[0]), int(size[1]))
        scale = size[0] // height  # a constant of an exported graph (pixel_shuffle needs one)
        # Nearest resizing by a power of two reads source index dst // s exactly, as the sub-pixel form does.
        if scale >= 1 and size == (scale * height, scale * width) and scale & (scale - 1) == 0:
            hidden = subpixel_conv(segmap, *self._label_weights(scale), scale)
        else:
            weight, bias = self._label_weights(1)
            hidden = F.conv2d(F.interpolate(segmap, size=size, mode="nearest"), weight, bias, padding=1)
        return list(F.relu(hidden).split(self.hidden_channels, dim=1))

    def _shortcut_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """norm_s's gamma conv stacked with its beta conv pre-multiplied by the 1x1 conv_s.

        conv_s is a linear 1x1 conv, so conv_s(n * (1 + gamma) + beta) = conv_s(n * (1 + gamma)) +
        (W_s . mlp_beta)(hidden), and the beta conv gives C_out instead of C_in channels.
        Returns weight (C_in + C_out, hidden, 3, 3) and bias (C_in + C_out,).
        """
        gamma_conv, beta_conv = self.norm_s.mlp_gamma, self.norm_s.mlp_beta
        sources = (
            *(self.conv_s.weight_orig, self.conv_s.weight_u, self.conv_s.weight_v),
            *(gamma_conv.weight, gamma_conv.bias, beta_conv.weight, beta_conv.bias),
        )

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            mix = self.conv_s.normalized_weight().flatten(1)  # (C_out, C_in)
            beta_weight = torch.einsum("oc,chyx->ohyx", mix, beta_conv.weight)
            beta_bias = torch.mv(mix, beta_conv.bias)
            return torch.cat([gamma_conv.weight, beta_weight]), torch.cat([gamma_conv.bias, beta_bias])

        return self.shortcut_cache.get(sources, compute)

    def _learned_shortcut(self, normalized: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """conv_s(norm_s(x)): normalized (B, C_in, H, W), hidden (B, hidden, H, W) -> (B, C_out, H, W)."""
        weight, bias = self._shortcut_weights()
        in_channels = normalized.shape[1]
        gamma_beta = F.conv2d(hidden, weight, bias, padding=1)
        gamma = gamma_beta.narrow(1, 0, in_channels)
        mixed_beta = gamma_beta.narrow(1, in_channels, weight.shape[0] - in_channels)
        return self.conv_s(normalized * gamma.add_(1.0)).add_(mixed_beta)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        hiddens = self.label_hiddens(segmap, (x.shape[-2], x.shape[-1]))
        normalized = F.instance_norm(x, eps=INSTANCE_NORM_EPS)  # shared by norm_0 and norm_s
        shortcut = self._learned_shortcut(normalized, hiddens[2]) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu_(self.norm_0.modulate(normalized, hiddens[0]), LEAKY_SLOPE))
        dx = self.norm_1.modulate(F.instance_norm(dx, eps=INSTANCE_NORM_EPS), hiddens[1])
        return shortcut + self.conv_1(F.leaky_relu_(dx, LEAKY_SLOPE))


class SPADEDecoder(nn.Module):
    """Generator: feature (B, C_feat, H, W) -> image (B, 3, 4*u*H, 4*u*W) in (0, 1), u = ``upscale``.

    Official sizes: C_feat = min(max_features, block_expansion * 2**num_down_blocks) = 256, H = W = 64,
    upscale 2 -> (B, 3, 512, 512). ``fc`` widens to 2*C_feat; six blocks at H x W; nearest x2, ``up_0`` to
    C_feat; nearest x2, ``up_1`` to ``out_channels``; LeakyReLU(0.2), ``conv_img`` (3*u*u channels + pixel
    shuffle, or 3 channels when upscale <= 1), sigmoid. Every block takes the input feature as its label map.
    ``spade_hidden_channels`` (128 in the official model) narrows the SPADE label convs for tiny variants.
    """

    def __init__(
        self,
        upscale: int | None = 2,
        max_features: int = 512,
        block_expansion: int = 64,
        out_channels: int = 64,
        num_down_blocks: int = 2,
        spade_hidden_channels: int = 128,
    ) -> None:
        super().__init__()
        if num_down_blocks < 1 or min(max_features, block_expansion, out_channels, spade_hidden_channels) < 1:
            raise ConfigError(
                f"SPADEDecoder: num_down_blocks={num_down_blocks}, max_features={max_features}, "
                f"block_expansion={block_expansion}, out_channels={out_channels}, "
                f"spade_hidden_channels={spade_hidden_channels} must all be >= 1"
            )
        self.upscale = upscale
        self.feature_channels = min(max_features, block_expansion * 2**num_down_blocks)
        width = 2 * self.feature_channels
        label = self.feature_channels
        self.fc = nn.Conv2d(label, width, 3, padding=1)
        for index in range(6):
            setattr(self, f"G_middle_{index}", SPADEResnetBlock(width, width, label, spade_hidden_channels))
        self.up_0 = SPADEResnetBlock(width, label, label, spade_hidden_channels)
        self.up_1 = SPADEResnetBlock(label, out_channels, label, spade_hidden_channels)
        self.conv_img: nn.Module
        if upscale is None or upscale <= 1:
            self.conv_img = nn.Conv2d(out_channels, 3, 3, padding=1)
        else:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * upscale * upscale, 3, padding=1), nn.PixelShuffle(upscale)
            )

    def clear_weight_caches(self) -> None:
        """Drop every cached derived weight (needed only after writes through ``tensor.data``)."""
        for module in self.modules():
            for value in vars(module).values():
                if isinstance(value, DerivedWeightCache):
                    value.clear()

    def middle_blocks(self) -> list[SPADEResnetBlock]:
        """G_middle_0..5, in order."""
        return [getattr(self, f"G_middle_{index}") for index in range(6)]

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """feature (B, C_feat, H, W) -> image (B, 3, 4*u*H, 4*u*W) in (0, 1)."""
        if feature.dim() != 4 or feature.shape[1] != self.feature_channels:
            expected = f"(B, {self.feature_channels}, H, W)"
            raise InputError(f"SPADEDecoder expects a {expected} feature, got shape {tuple(feature.shape)}")
        x = self.fc(feature)
        for block in self.middle_blocks():
            x = block(x, feature)
        x = self.up_0(upsample_nearest(x, 2), feature)
        x = self.up_1(upsample_nearest(x, 2), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu_(x, LEAKY_SLOPE)))
