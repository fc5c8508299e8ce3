"""The LMDM's guided x_0 in the original implementation's operation order: bit-identical, slower.

:meth:`LMDM.guided_denoiser <ditto_research.models.lmdm.LMDM.guided_denoiser>` computes the same function
reordered for speed (both guidance branches in one batch, the condition encoder and every time-dependent
input once per window, fused multiply-adds); its results move by float32 rounding (~1e-6 relative per
window). ``backend.lmdm_order=reference`` runs this module instead, which repeats the original's
``MotionDecoder.guided_forward`` operation for operation on CPU float32 (verified bit for bit against the
reference's goldens, and end to end): per step an unconditional then a conditional pass, each re-encoding
the condition; ``nn.MultiheadAttention``'s separate q / k / v projections of (L, B, D) views, its head
layout and output projection; rotary embedding as ``t * cos + rotate_half(t) * sin``; FiLM as
``(scale + 1) * x + shift`` added to the residual; the 82 memory tokens normalised and projected together.
About 2x the fast path's time per step (docs/backends.md); use it to check a result against the original.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ditto_research.diffusion.ddim import Denoiser
from ditto_research.errors import InputError

__all__ = ["reference_guided_denoiser", "reference_x_start"]


def _rotate(lmdm, t: torch.Tensor) -> torch.Tensor:
    """Rotary embedding over positions 0..L-1 of (B, L, D), as ``rotate_queries_or_keys``."""
    positions = torch.arange(t.shape[-2], device=t.device).type(lmdm.rotary.freqs.dtype)
    freqs = torch.einsum("..., f -> ... f", positions, lmdm.rotary.freqs).repeat_interleave(2, dim=-1).to(t)
    x1, x2 = t.unflatten(-1, (-1, 2)).unbind(dim=-1)
    rotated_half = torch.stack((-x2, x1), dim=-1).flatten(-2)
    return (t * freqs.cos()) + (rotated_half * freqs.sin())


def _attention(attn, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``nn.MultiheadAttention(batch_first=True)`` (eval, no mask, need_weights=False) on a
    :class:`~ditto_research.models.lmdm.PackedAttention`'s parameters; query is key, key is not value."""
    dim, heads = attn.out_proj.in_features, attn.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    query, key, value = (x.transpose(1, 0) for x in (query, key, value))  # (L, B, D)
    tgt_len, batch, _ = query.shape
    src_len = key.shape[0]
    q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
    head_dim = dim // heads
    q = q.view(tgt_len, batch * heads, head_dim).transpose(0, 1).view(batch, heads, tgt_len, head_dim)
    k = k.view(src_len, batch * heads, head_dim).transpose(0, 1).view(batch, heads, src_len, head_dim)
    v = v.view(src_len, batch * heads, head_dim).transpose(0, 1).view(batch, heads, src_len, head_dim)
    out = F.scaled_dot_product_attention(q, k, v, None, 0.0, False)
    out = out.permute(2, 0, 1, 3).contiguous().view(batch * tgt_len, dim)
    out = F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
    return out.view(tgt_len, batch, dim).transpose(1, 0)


def _film(film, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale, shift = film.block[1](film.block[0](t)).unsqueeze(1).chunk(2, dim=-1)
    return scale, shift


def _modulated(x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    scale, shift = scale_shift
    return (scale + 1) * x + shift


@torch.no_grad()
def reference_x_start(
    lmdm,
    x: torch.Tensor,
    cond_frame: torch.Tensor,
    cond: torch.Tensor,
    times: torch.Tensor,
    drop_condition: bool = False,
    *,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """One unguided pass in the original's order: x_t (B, N, F), cond_frame (B, F), cond (B, N, C),
    times (B,) -> x_0 (B, N, F); ``drop_condition`` gives the unconditional branch (null embeddings), or
    ``keep`` (B,) bool chooses per sample (training's classifier-free dropout, False = dropped)."""
    batch = x.shape[0]
    x = torch.cat([x, cond_frame.unsqueeze(1).repeat(1, x.shape[1], 1)], dim=-1)
    x = lmdm.input_projection(x)

    tokens = lmdm.cond_projection(cond)
    for layer in lmdm.cond_encoder:
        h = layer.norm1(tokens)
        qk = _rotate(lmdm, h)
        tokens = tokens + _attention(layer.self_attn, qk, qk, h)
        tokens = tokens + layer.linear2(F.gelu(layer.linear1(layer.norm2(tokens))))
    if keep is None:
        keep = torch.full((batch,), not drop_condition, dtype=torch.bool, device=x.device)
    tokens = torch.where(keep[:, None, None], tokens, lmdm.null_cond_embed.to(tokens.dtype))
    cond_hidden = lmdm.non_attn_cond_projection(tokens.mean(dim=-2))

    t_hidden = lmdm.time_mlp(times)
    t = lmdm.to_time_cond(t_hidden)
    time_tokens = lmdm.to_time_tokens(t_hidden).unflatten(-1, (2, -1))
    t += torch.where(keep[:, None], cond_hidden, lmdm.null_cond_hidden.to(t.dtype))
    memory = lmdm.norm_cond(torch.cat((tokens, time_tokens), dim=-2))

    for layer in lmdm.seqTransDecoder.stack:
        h = layer.norm1(x)
        qk = _rotate(lmdm, h)
        x = x + _modulated(_attention(layer.self_attn, qk, qk, h), _film(layer.film1, t))
        h = layer.norm2(x)
        attended = _attention(layer.multihead_attn, _rotate(lmdm, h), _rotate(lmdm, memory), memory)
        x = x + _modulated(attended, _film(layer.film2, t))
        feed_forward = layer.linear2(F.gelu(layer.linear1(layer.norm3(x))))
        x = x + _modulated(feed_forward, _film(layer.film3, t))
    return lmdm.final_layer(x)


def reference_guided_denoiser(
    lmdm, cond_frame: torch.Tensor, cond: torch.Tensor, guidance_scale: float | None = None
) -> Denoiser:
    """D(x_t, t) = uncond + (cond - uncond) * w, both branches computed in full at every call (the original
    runs both even at w = 1). cond_frame (B, F), cond (B, N, C); D takes x_t (B, N, F) and t (B,) or a
    scalar."""
    if cond.shape[-1] != lmdm.cond_dim:
        raise InputError(lmdm._cond_width_message(cond))
    weight = lmdm.guidance_weight if guidance_scale is None else float(guidance_scale)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        times = t.reshape(-1).expand(x.shape[0])
        uncond = reference_x_start(lmdm, x, cond_frame, cond, times, drop_condition=True)
        conditioned = reference_x_start(lmdm, x, cond_frame, cond, times, drop_condition=False)
        return uncond + (conditioned - uncond) * weight

    return denoise
