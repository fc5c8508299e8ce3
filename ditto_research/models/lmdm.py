"""LMDM, Ditto's latent motion diffusion model: a FiLM transformer decoder that denoises 80 frames of motion.

One denoising pass (:meth:`LMDM.denoise`) predicts x_0 from a noisy motion window x_t, the motion of the
frame before the window (``cond_frame``), per-frame condition features (HuBERT audio + emotion/eye/shape
columns) and the diffusion time t:

* the condition is projected to the latent width and run through a 2-layer transformer encoder; its token
  mean goes through an MLP to a "hidden" vector. Both are learned null embeddings when the condition is
  dropped (classifier-free guidance);
* t gives a FiLM vector (plus the condition hidden) and two extra memory tokens;
* x_t, concatenated with cond_frame on every frame, is decoded by 8 pre-norm layers: self-attention,
  cross-attention over the 82 memory tokens, feed-forward, each scaled and shifted by FiLM of t.

Rotary position embedding rotates the full latent-width features (interleaved pairs, before the attention
input projection) of queries and keys, never values; memory tokens take positions 0..81.

Sampling runs many steps on one window (:meth:`LMDM.guided_denoiser`), so what depends only on the window
is computed once (:meth:`LMDM.prepare_memory`): the condition encoder and every decoder layer's
cross-attention keys/values of the N condition tokens (LayerNorm, rotation and projection act per token, so
only the 2 time tokens are new at each step). What depends only on t (FiLM modulations, time-token
keys/values) is computed for the sampler's whole time grid as one batch (:meth:`LMDM.condition_steps`).
The guidance branches run as one batch; they share x_t, so the input projection and the first layer's
self-attention are computed once for both. None of this changes any output beyond float32 rounding.

:meth:`LMDM.forward` is the official ONNX interface ``lmdm(x, cond_frame, cond, time_cond) -> pred_noise,
x_start`` with guidance weight 2. Parameter and buffer names follow ``lmdm_v0.4_hubert.pth``'s
``model_state_dict`` (249 keys; one shared ``rotary.freqs`` buffer appears under 11 of them). Inference only:
the reference's dropout layers (p = 0.1) are left out.

Shape legend: B batch, N motion frames (80), M = N + 2 memory tokens, D latent width (512),
F motion features (265), C condition features (1103 official, 1059 the reference default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ditto_research.diffusion.ddim import Denoiser
from ditto_research.diffusion.schedule import NUM_TRAIN_STEPS, cosine_alphas_cumprod
from ditto_research.errors import CheckpointError, ConfigError, InputError

__all__ = ["LMDM", "DecoderMemory", "lmdm_cond_dim_from_state_dict"]

Rope = tuple[torch.Tensor, torch.Tensor]
"""(cos, signed sin), each (P, D): rotary tables for positions 0..P-1 (see :meth:`RotaryEmbedding.tables`)."""

KeyValue = tuple[torch.Tensor, torch.Tensor]
"""Projected attention keys and values split into heads, each (B, H, L, D/H)."""

GainShift = tuple[torch.Tensor, torch.Tensor]
"""A FiLM modulation (1 + scale, shift), each (..., B, 1, D)."""


class RotaryEmbedding(nn.Module):
    """Rotary tables over the full width D; ``freqs`` (D/2,) = 10000^(-2i/D) is a checkpoint buffer."""

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        # Same float32 arithmetic as the reference buffer (it is also saved in the checkpoint).
        exponents = torch.arange(0, dim, 2)[: dim // 2].float() / dim
        self.register_buffer("freqs", 1.0 / (theta**exponents))

    def tables(self, num_positions: int) -> Rope:
        """(cos, signed sin) (P, D): each frequency repeated for its interleaved pair of features, the sine
        as (-sin, +sin) per pair so that :func:`apply_rope` needs no negation."""
        positions = torch.arange(num_positions, device=self.freqs.device, dtype=self.freqs.dtype)
        angles = torch.outer(positions, self.freqs)
        sin = angles.sin()
        # Pairs by stack rather than repeat_interleave, whose ONNX export mis-infers dynamic shapes.
        cos = torch.stack((angles, angles), dim=-1).flatten(-2).cos()
        return cos, torch.stack((-sin, sin), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate (B, L, D) features by position: pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)."""
    cos, signed_sin = rope
    length = x.shape[-2]
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # pairs (x1, x0)
    return torch.addcmul(x * cos[:length].to(x.dtype), swapped, signed_sin[:length].to(x.dtype))


class PackedAttention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameters (``in_proj_*`` packs q, k, v).

    Queries and keys arrive already rotated; (B, Lq, D), (B, Lk, D), (B, Lk, D) -> (B, Lq, D). ``dropout``
    drops attention weights in training mode only (nn.MultiheadAttention's ``dropout``).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _dropout_p(self) -> float:
        return self.dropout if self.training else 0.0

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, L, D) -> (B, H, L, D/H)

    def project_key_value(self, key: torch.Tensor, value: torch.Tensor) -> KeyValue:
        """Rotated keys and values (B, L, D) -> their projections split into heads, (B, H, L, D/H) each."""
        dim = self.out_proj.in_features
        weight, bias = self.in_proj_weight, self.in_proj_bias
        k = F.linear(key, weight[dim : 2 * dim], bias[dim : 2 * dim])
        v = F.linear(value, weight[2 * dim :], bias[2 * dim :])
        return self._split_heads(k), self._split_heads(v)

    def attend(self, query: torch.Tensor, key_value: KeyValue) -> torch.Tensor:
        """Rotated queries (B, Lq, D) against projected keys and values (B, H, Lk, D/H) -> (B, Lq, D)."""
        dim = self.out_proj.in_features
        q = F.linear(query, self.in_proj_weight[:dim], self.in_proj_bias[:dim])
        heads = F.scaled_dot_product_attention(self._split_heads(q), *key_value, dropout_p=self._dropout_p())
        return self.out_proj(heads.transpose(1, 2).flatten(-2))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        if query is not key:
            return self.attend(query, self.project_key_value(key, value))
        # Self-attention: q and k from one projection.
        dim = self.out_proj.in_features
        weight, bias = self.in_proj_weight, self.in_proj_bias
        q, k = F.linear(query, weight[: 2 * dim], bias[: 2 * dim]).chunk(2, dim=-1)
        v = F.linear(value, weight[2 * dim :], bias[2 * dim :])
        heads = F.scaled_dot_product_attention(
            self._split_heads(q), self._split_heads(k), self._split_heads(v), dropout_p=self._dropout_p()
        )
        return self.out_proj(heads.transpose(1, 2).flatten(-2))


class CondEncoderLayer(nn.Module):
    """Pre-norm encoder layer, rotary self-attention and a GELU MLP; (B, N, D) -> (B, N, D). ``dropout``
    (training mode only) where the original's TransformerEncoderLayer drops: attention weights, the
    attention output, after the MLP's activation and its output."""

    def __init__(
        self, dim: int, num_heads: int, ff_size: int, rotary: RotaryEmbedding, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.self_attn = PackedAttention(dim, num_heads, dropout)
        self.linear1 = nn.Linear(dim, ff_size)
        self.linear2 = nn.Linear(ff_size, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.rotary = rotary  # shared; registered here only because the checkpoint lists it here

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:
        p, training = self.dropout, self.training
        h = self.norm1(x)
        qk = apply_rope(h, rope)
        x = x + F.dropout(self.self_attn(qk, qk, h), p, training)
        hidden = F.dropout(F.gelu(self.linear1(self.norm2(x))), p, training)
        return x + F.dropout(self.linear2(hidden), p, training)


class FiLM(nn.Module):
    """Mish -> Linear: FiLM vector (..., B, D) -> (1 + scale, shift), each (..., B, 1, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Mish(), nn.Linear(dim, 2 * dim))

    def forward(self, film: torch.Tensor) -> GainShift:
        return self.project(self.block[0](film))

    def project(self, activated_film: torch.Tensor) -> GainShift:
        """The Linear alone, for a FiLM vector already passed through Mish (shared by all FiLM modules)."""
        scale, shift = self.block[1](activated_film).unsqueeze(-2).chunk(2, dim=-1)
        return scale + 1, shift


def add_modulated(x: torch.Tensor, branch: torch.Tensor, gain_shift: GainShift) -> torch.Tensor:
    """Residual update x + (1 + scale) * branch + shift."""
    gain, shift = gain_shift
    return torch.addcmul(x + shift, gain, branch)


class FiLMDecoderLayer(nn.Module):
    """Pre-norm decoder layer; every residual branch is FiLM-modulated by the time vector.

    x (B, N, D), the memory's projected cross-attention keys/values (G*B, H, M, D/H) and the three FiLM
    modulations of film1..3, each (G*B, 1, D) -> (G*B, N, D), where G = ``branches`` when x is shared by G
    guidance branches (stacked branch-major), else 1. ``dropout`` (training mode only) where the original's
    FiLMTransformerDecoderLayer drops: attention weights, both attention outputs, after the MLP's activation
    and its output.
    """

    def __init__(
        self, dim: int, num_heads: int, ff_size: int, rotary: RotaryEmbedding, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.self_attn = PackedAttention(dim, num_heads, dropout)
        self.multihead_attn = PackedAttention(dim, num_heads, dropout)
        self.linear1 = nn.Linear(dim, ff_size)
        self.linear2 = nn.Linear(ff_size, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.film1 = FiLM(dim)
        self.film2 = FiLM(dim)
        self.film3 = FiLM(dim)
        self.rotary = rotary  # shared; registered here only because the checkpoint lists it here

    def memory_key_value(self, memory: torch.Tensor, memory_rotated: torch.Tensor) -> KeyValue:
        """Cross-attention keys/values (B, H, L, D/H) of normalised memory tokens (B, L, D) and their
        rotation."""
        return self.multihead_attn.project_key_value(memory_rotated, memory)

    def modulations(self, activated_film: torch.Tensor) -> tuple[GainShift, GainShift, GainShift]:
        """film1..3 of a Mish-activated FiLM vector (..., B, D)."""
        return tuple(film.project(activated_film) for film in (self.film1, self.film2, self.film3))

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: KeyValue,
        modulations: tuple[GainShift, GainShift, GainShift],
        rope: Rope,
        branches: int = 1,
    ) -> torch.Tensor:
        p, training = self.dropout, self.training
        h = self.norm1(x)
        qk = apply_rope(h, rope)
        attended = F.dropout(self.self_attn(qk, qk, h), p, training)
        if branches > 1:  # the branches share this layer's input: attend once, modulate per branch
            x, attended = x.repeat(branches, 1, 1), attended.repeat(branches, 1, 1)
        x = add_modulated(x, attended, modulations[0])
        q = apply_rope(self.norm2(x), rope)
        x = add_modulated(x, F.dropout(self.multihead_attn.attend(q, memory_kv), p, training), modulations[1])
        hidden = F.dropout(F.gelu(self.linear1(self.norm3(x))), p, training)
        return add_modulated(x, F.dropout(self.linear2(hidden), p, training), modulations[2])


class DecoderStack(nn.Module):
    """Holds the decoder layers under the checkpoint's ``seqTransDecoder.stack.<i>`` names."""

    def __init__(self, layers: list[FiLMDecoderLayer]) -> None:
        super().__init__()
        self.stack = nn.ModuleList(layers)


class SinusoidalTimeEmbedding(nn.Module):
    """t (B,) int -> (B, D) = [sin(t w_i), cos(t w_i)], w_i = 10000^(-i / (D/2 - 1))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        rate = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=t.device) * -rate)
        angles = t[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class DecoderMemory(NamedTuple):
    """What a decoder pass needs besides x_t and t, prepared once per window by :meth:`LMDM.prepare_memory`.

    G guidance branches (1, or 2 = [unconditional, conditional]) are stacked branch-major along the batch.
    """

    cond_frame: torch.Tensor
    """(B, F): the motion of the frame before the window, shared by the branches."""
    cond_hidden: torch.Tensor
    """(G*B, D): pooled condition hidden of each branch (added to the FiLM vector)."""
    cond_key_values: list[KeyValue]
    """Per decoder layer: cross-attention keys/values of the N normalised condition tokens,
    (G*B, H, N, D/H)."""
    rope: Rope
    """Rotary tables for the N + 2 memory positions (they also cover x's N frames)."""
    branches: int


class StepConditioning(NamedTuple):
    """The time-dependent decoder inputs of one step t for one :class:`DecoderMemory`.

    Per decoder layer: the film1..3 modulations of FiLM(time vector + cond hidden), each (G*B, 1, D), and the
    cross-attention keys/values of the 2 time tokens, each (G*B or 1, H, 2, D/H).
    """

    modulations: list[tuple[GainShift, GainShift, GainShift]]
    time_key_values: list[KeyValue]


class LMDM(nn.Module):
    """The motion diffusion transformer with its cosine schedule and classifier-free guidance.

    ``alphas_cumprod`` (T,) float32 is a non-persistent buffer (the checkpoint does not hold it). ``dropout``
    acts in training mode only, where the original's layers drop (it trained with 0.1); 0 by default, so an
    inference model left in training mode by mistake still computes the same function.
    """

    def __init__(
        self,
        motion_dim: int = 265,
        cond_dim: int = 1103,
        seq_frames: int = 80,
        latent_dim: int = 512,
        ff_size: int = 1024,
        num_layers: int = 8,
        num_heads: int = 8,
        num_cond_layers: int = 2,
        guidance_weight: float = 2.0,
        num_train_steps: int = NUM_TRAIN_STEPS,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"LMDM dropout must be in [0, 1), got {dropout}")
        if latent_dim % (2 * num_heads) != 0:
            raise ConfigError(
                f"LMDM latent_dim must be a multiple of 2 * num_heads, got {latent_dim}, {num_heads}"
            )
        self.motion_dim = motion_dim
        self.cond_dim = cond_dim
        self.seq_frames = seq_frames
        self.guidance_weight = guidance_weight

        self.rotary = RotaryEmbedding(latent_dim)
        self.time_mlp = nn.Sequential(
            SinusoidalTimeEmbedding(latent_dim), nn.Linear(latent_dim, 4 * latent_dim), nn.Mish()
        )
        self.to_time_cond = nn.Sequential(nn.Linear(4 * latent_dim, latent_dim))
        self.to_time_tokens = nn.Sequential(nn.Linear(4 * latent_dim, 2 * latent_dim))  # 2 memory tokens
        self.null_cond_embed = nn.Parameter(torch.randn(1, seq_frames, latent_dim))
        self.null_cond_hidden = nn.Parameter(torch.randn(1, latent_dim))
        self.norm_cond = nn.LayerNorm(latent_dim)
        self.input_projection = nn.Linear(2 * motion_dim, latent_dim)
        self.cond_projection = nn.Linear(cond_dim, latent_dim)
        self.cond_encoder = nn.ModuleList(
            CondEncoderLayer(latent_dim, num_heads, ff_size, self.rotary, dropout)
            for _ in range(num_cond_layers)
        )
        self.non_attn_cond_projection = nn.Sequential(
            nn.LayerNorm(latent_dim),
            nn.Linear(latent_dim, latent_dim),
            nn.SiLU(),
            nn.Linear(latent_dim, latent_dim),
        )
        self.seqTransDecoder = DecoderStack(
            [
                FiLMDecoderLayer(latent_dim, num_heads, ff_size, self.rotary, dropout)
                for _ in range(num_layers)
            ]
        )
        self.final_layer = nn.Linear(latent_dim, motion_dim)
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(num_train_steps), persistent=False)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], num_heads: int = 8) -> LMDM:
        """Build with every size read from an LMDM ``model_state_dict`` (heads excepted), load it, eval()."""
        cond_dim = lmdm_cond_dim_from_state_dict(state_dict)
        try:
            motion_dim, latent_dim = state_dict["final_layer.weight"].shape
            model = cls(
                motion_dim=motion_dim,
                cond_dim=cond_dim,
                seq_frames=state_dict["null_cond_embed"].shape[1],
                latent_dim=latent_dim,
                ff_size=state_dict["seqTransDecoder.stack.0.linear1.weight"].shape[0],
                num_layers=len(
                    {k.split(".")[2] for k in state_dict if k.startswith("seqTransDecoder.stack.")}
                ),
                num_heads=num_heads,
                num_cond_layers=len({k.split(".")[1] for k in state_dict if k.startswith("cond_encoder.")}),
            )
            model.load_state_dict(state_dict)
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"not an LMDM model_state_dict ({type(e).__name__}: {e})") from e
        return model.eval()

    def encode_condition(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cond (B, N, C) -> (cond tokens (B, N, D), pooled cond hidden (B, D)); independent of x and t."""
        tokens = self.cond_projection(cond)
        rope = self.rotary.tables(tokens.shape[1])
        for layer in self.cond_encoder:
            tokens = layer(tokens, rope)
        return tokens, self.non_attn_cond_projection(tokens.mean(dim=-2))

    def null_condition(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The dropped condition: (null tokens (B, N, D), null hidden (B, D))."""
        return self.null_cond_embed.expand(batch, -1, -1), self.null_cond_hidden.expand(batch, -1)

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t (B,) int64 -> (FiLM vector (B, D), time memory tokens (B, 2, D))."""
        hidden = self.time_mlp(t)
        return self.to_time_cond(hidden), self.to_time_tokens(hidden).unflatten(-1, (2, -1))

    def prepare_memory(
        self,
        cond_frame: torch.Tensor,
        cond_tokens: torch.Tensor,
        cond_hidden: torch.Tensor,
        branches: int = 1,
    ) -> DecoderMemory:
        """The x- and t-independent part of the decoder's input, for G = ``branches`` stacked conditions.

        cond_frame (B, F); encoded conditions, branch-major: tokens (G*B, N, D), hidden (G*B, D).
        """
        memory = self.norm_cond(cond_tokens)  # per-token LayerNorm: the 2 time tokens do not change it
        rope = self.rotary.tables(memory.shape[1] + 2)
        rotated = apply_rope(memory, rope)
        key_values = [layer.memory_key_value(memory, rotated) for layer in self.seqTransDecoder.stack]
        return DecoderMemory(cond_frame, cond_hidden, key_values, rope, branches)

    def condition_steps(self, memory: DecoderMemory, times: torch.Tensor) -> list[StepConditioning]:
        """Step conditionings for a grid of S scalar times (S,), computed as one batch (for sampling)."""
        film, time_tokens = self.embed_time(times)  # (S, D), (S, 2, D)
        batched = self._condition_time(memory, film[:, None] + memory.cond_hidden, time_tokens)
        return [
            StepConditioning(
                [tuple((gain[i], shift[i]) for gain, shift in layer) for layer in batched.modulations],
                [(key[i : i + 1], value[i : i + 1]) for key, value in batched.time_key_values],
            )
            for i in range(times.shape[0])
        ]

    def _condition_time(
        self, memory: DecoderMemory, film: torch.Tensor, time_tokens: torch.Tensor
    ) -> StepConditioning:
        """film (..., G*B, D), time tokens (T, 2, D) -> modulations (..., G*B, 1, D), keys/values
        (T, H, 2, D/H)."""
        activated = F.mish(film)  # every FiLM module starts with the same Mish
        modulations = [layer.modulations(activated) for layer in self.seqTransDecoder.stack]
        # The time tokens sit after the N condition tokens: positions N and N + 1.
        cos, sin = memory.rope
        time_memory = self.norm_cond(time_tokens)
        time_rotated = apply_rope(time_memory, (cos[-2:], sin[-2:]))
        key_values = [
            layer.memory_key_value(time_memory, time_rotated) for layer in self.seqTransDecoder.stack
        ]
        return StepConditioning(modulations, key_values)

    def decode_prepared(
        self, x: torch.Tensor, memory: DecoderMemory, t: torch.Tensor, step: StepConditioning | None = None
    ) -> torch.Tensor:
        """x_t (B, N, F) and t (B,) -> x_0 of every branch (G*B, N, F), branch-major.

        ``step``: t's conditioning from :meth:`condition_steps` (computed here when None).
        """
        frames, branches = x.shape[1], memory.branches
        if step is None:
            film, time_tokens = self.embed_time(t)
            step = self._condition_time(memory, film.repeat(branches, 1) + memory.cond_hidden, time_tokens)
        cond_frame = memory.cond_frame.unsqueeze(1).expand(-1, frames, -1)
        h = self.input_projection(torch.cat([x, cond_frame], dim=-1))
        for i, layer in enumerate(self.seqTransDecoder.stack):
            (cond_key, cond_value), (time_key, time_value) = (
                memory.cond_key_values[i],
                step.time_key_values[i],
            )
            copies = cond_key.shape[0] // time_key.shape[0]  # branch-major: the time tokens repeat per branch
            key_value = (
                torch.cat([cond_key, time_key.repeat(copies, 1, 1, 1)], dim=2),
                torch.cat([cond_value, time_value.repeat(copies, 1, 1, 1)], dim=2),
            )
            h = layer(h, key_value, step.modulations[i], memory.rope, branches=branches if i == 0 else 1)
        return self.final_layer(h)

    def decode(
        self,
        x: torch.Tensor,
        cond_frame: torch.Tensor,
        cond_tokens: torch.Tensor,
        cond_hidden: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        """x_t (B, N, F), cond_frame (B, F), encoded cond (B, N, D) and (B, D), t (B,) -> x_0 (B, N, F)."""
        return self.decode_prepared(x, self.prepare_memory(cond_frame, cond_tokens, cond_hidden), t)

    def denoise(
        self,
        x: torch.Tensor,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        t: torch.Tensor,
        cond_drop_prob: Literal[0, 1] = 0,
    ) -> torch.Tensor:
        """One unguided pass: x_t (B, N, F), cond_frame (B, F), cond (B, N, C), t (B,) -> x_0 (B, N, F).

        cond_drop_prob 1 replaces the condition by the null embeddings (the unconditional branch).
        """
        self._check_inputs(x, cond)
        t = t.reshape(-1).expand(x.shape[0])
        if cond_drop_prob == 0:
            tokens, hidden = self.encode_condition(cond)
        elif cond_drop_prob == 1:
            tokens, hidden = self.null_condition(x.shape[0])
        else:
            raise ConfigError(
                f"cond_drop_prob must be 0 or 1 (no random dropout at inference), got {cond_drop_prob}"
            )
        return self.decode(x, cond_frame, tokens, hidden, t)

    def denoise_masked(
        self,
        x: torch.Tensor,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        t: torch.Tensor,
        keep_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Training's pass: x_t (B, N, F) -> x_0 (B, N, F) with, per sample, the condition (``keep_mask``
        (B,) True) or the null embeddings (False): classifier-free dropout with its random mask given."""
        self._check_inputs(x, cond)
        tokens, hidden = self.encode_condition(cond)
        null_tokens, null_hidden = self.null_condition(x.shape[0])
        keep = keep_mask.reshape(-1, 1, 1).to(torch.bool)
        tokens = torch.where(keep, tokens, null_tokens)
        hidden = torch.where(keep[:, 0], hidden, null_hidden)
        return self.decode(x, cond_frame, tokens, hidden, t.reshape(-1).expand(x.shape[0]))

    def guided_x_start(
        self,
        x: torch.Tensor,
        cond_frame: torch.Tensor,
        cond_tokens: torch.Tensor,
        cond_hidden: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        """x_0 = uncond + (cond - uncond) * guidance_weight, both branches decoded as one batch of 2B."""
        memory = self._guided_memory(cond_frame, cond_tokens, cond_hidden)
        return self._combine_branches(self.decode_prepared(x, memory, t), self.guidance_weight)

    def _guided_memory(
        self, cond_frame: torch.Tensor, cond_tokens: torch.Tensor, cond_hidden: torch.Tensor
    ) -> DecoderMemory:
        null_tokens, null_hidden = self.null_condition(cond_tokens.shape[0])
        return self.prepare_memory(
            cond_frame,
            torch.cat([null_tokens, cond_tokens]),
            torch.cat([null_hidden, cond_hidden]),
            branches=2,
        )

    @staticmethod
    def _combine_branches(both: torch.Tensor, weight: float) -> torch.Tensor:
        """(2B, ...) = [uncond; cond] -> uncond + (cond - uncond) * weight (the reference's operand order)."""
        uncond, cond = both.chunk(2)
        return uncond + (cond - uncond) * weight

    def guided_denoiser(
        self,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        guidance_scale: float | None = None,
        times: torch.Tensor | None = None,
    ) -> Denoiser:
        """D(x_t, t) -> guided x_0 for one window, with everything x- and t-independent computed here once.

        cond_frame (B, F), cond (B, N, C); D takes x_t (B, N, F) and t (a scalar or (B,), int64 or, for
        samplers on a continuous grid, float) and returns x_0 (B, N, F). guidance_scale None =
        ``guidance_weight``; 1.0 runs the conditional branch alone (x_0 = cond), any other value both
        branches as one batch. times (S,): the sampler's time grid, whose time-dependent inputs (FiLM
        modulations, time-token keys/values) are then computed here as one batch; other times still work.
        """
        if cond.shape[-1] != self.cond_dim:
            raise InputError(self._cond_width_message(cond))
        weight = self.guidance_weight if guidance_scale is None else float(guidance_scale)
        tokens, hidden = self.encode_condition(cond)
        if weight == 1.0:
            memory = self.prepare_memory(cond_frame, tokens, hidden)
        else:
            memory = self._guided_memory(cond_frame, tokens, hidden)
        grid: dict[float, StepConditioning] = {}
        if times is not None:
            times = times.reshape(-1).to(self.alphas_cumprod.device)
            grid = dict(zip(times.tolist(), self.condition_steps(memory, times), strict=True))

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            step = grid.get(float(t.reshape(-1)[0])) if t.numel() == 1 else None
            out = self.decode_prepared(x, memory, t.reshape(-1).expand(x.shape[0]), step)
            return out if memory.branches == 1 else self._combine_branches(out, weight)

        return denoise

    def predict_noise_from_start(
        self, x: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor
    ) -> torch.Tensor:
        """eps = x_t / sqrt(1 - a_t) - x_0 / sqrt(1 / a_t - 1), a = alphas_cumprod; t (B,), x (B, ...)."""
        alpha = self.alphas_cumprod[t].reshape(-1, *([1] * (x.dim() - 1)))
        return torch.sqrt(1.0 / (1.0 - alpha)) * x - x_start / torch.sqrt(1.0 / alpha - 1)

    def forward(
        self, x: torch.Tensor, cond_frame: torch.Tensor, cond: torch.Tensor, time_cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided step (the ONNX interface): x (B, N, F), cond_frame (B, F), cond (B, N, C), time_cond (B,)
        int64 -> (pred_noise, x_start), each (B, N, F)."""
        self._check_inputs(x, cond)
        t = time_cond.reshape(-1).expand(x.shape[0])
        tokens, hidden = self.encode_condition(cond)
        x_start = self.guided_x_start(x, cond_frame, tokens, hidden, t)
        return self.predict_noise_from_start(x, t, x_start), x_start

    def _cond_width_message(self, cond: torch.Tensor) -> str:
        return (
            f"LMDM condition has {cond.shape[-1]} features per frame but the model was built for "
            f"{self.cond_dim}; build the condition with the flags the checkpoint was trained with "
            "(1103 = audio 1024 + emo 8 + eye open 2 + eye ball 6 + shape 63)"
        )

    def _check_inputs(self, x: torch.Tensor, cond: torch.Tensor) -> None:
        if torch.jit.is_tracing():  # export: the example inputs fix the shapes anyway
            return
        if cond.shape[-1] != self.cond_dim:
            raise InputError(self._cond_width_message(cond))
        if cond.shape[1] != self.seq_frames or x.shape[1] != self.seq_frames:
            raise InputError(
                f"LMDM windows must be {self.seq_frames} frames, "
                f"got x {tuple(x.shape)} and cond {tuple(cond.shape)}"
            )


def lmdm_cond_dim_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Condition width C of an LMDM ``model_state_dict``: ``cond_projection.weight`` is (D, C)."""
    weight = state_dict.get("cond_projection.weight")
    if weight is None or weight.dim() != 2:
        raise CheckpointError(
            "LMDM state dict has no 2-d 'cond_projection.weight'; pass the checkpoint's 'model_state_dict' "
            "(e.g. torch.load('lmdm_v0.4_hubert.pth')['model_state_dict'])"
        )
    return int(weight.shape[1])
