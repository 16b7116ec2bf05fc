"""Plain-torch reference implementations of every overridable op; correct on any device."""

from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, H], weight [H] -> [T, H] in x's dtype; the mean of squares is taken in float32."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf.to(x.dtype) if x.dtype != torch.float32 else xf) * weight


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + residual) -> (rms_norm of the sum [T, H], the sum [T, H] as the new residual)."""
    summed = x + residual
    return rms_norm(summed, weight, eps), summed


def rotary(
    positions: torch.Tensor,  # int64 [T]
    query: torch.Tensor,  # [T, Hq * D]
    key: torch.Tensor,  # [T, Hkv * D]
    cos_sin_cache: torch.Tensor,  # float32 [max_pos, D]: cos in [:, :D/2], sin in [:, D/2:]
    head_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k by position, NeoX style (first half of each head pairs with the second)."""
    cos, sin = cos_sin_cache.index_select(0, positions).chunk(2, dim=-1)  # [T, D/2] each
    return _rotate(query, cos, sin, head_size), _rotate(key, cos, sin, head_size)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_size: int) -> torch.Tensor:
    shape = x.shape
    x = x.view(shape[0], -1, head_size)  # [T, H, D]
    x1, x2 = x.float().chunk(2, dim=-1)  # [T, H, D/2]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [T, 1, D/2]
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(x.dtype).view(shape)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [T, 2I] (gate then up) -> silu(gate) * up [T, I]."""
    gate, up = x.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [T, 2I] (gate then up) -> gelu(gate, tanh approximation) * up [T, I] (Gemma's GeGLU)."""
    gate, up = x.chunk(2, dim=-1)
    return torch.nn.functional.gelu(gate, approximate="tanh") * up


def top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None) -> torch.Tensor:
    """Mask logits [B, V] to each row's top_k (int64 [B], <= 0 or >= V means off) and top_p
    nucleus (float32 [B], 1.0 means off); masked entries become -inf. Returns a new tensor."""
    if top_k is None and top_p is None:
        return logits
    if top_p is None:
        return _top_k_only(logits, top_k)
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [B, V]
    vocab = logits.shape[-1]
    if top_k is not None:
        k = torch.where(top_k <= 0, vocab, top_k.clamp(max=vocab))  # [B]
        rank = torch.arange(vocab, device=logits.device).unsqueeze(0)  # [1, V]
        sorted_logits = sorted_logits.masked_fill(rank >= k.unsqueeze(1), float("-inf"))
    if top_p is not None:
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass strictly before each token
        # top_p >= 1 is off: the float cumsum can pass 1.0 and would otherwise drop the tail.
        drop = (before > top_p.unsqueeze(1)) & (top_p < 1.0).unsqueeze(1)
        drop[:, 0] = False  # the most likely token always survives
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def _top_k_only(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """top-k alone: keep logits >= each row's k-th largest (ties kept).

    A full sort rather than topk(max(k)): its shape never depends on the values of top_k, so it
    needs no host read and suits static-shape platforms. The sampler calls it on its [R, K]
    candidates, so the sort is short; plugins override it with faster kernels.
    """
    vocab = logits.shape[-1]
    k = torch.where(top_k <= 0, vocab, top_k.clamp(max=vocab))  # [B]
    ordered = logits.sort(dim=-1, descending=True).values  # [B, V]
    threshold = ordered.gather(1, (k - 1).unsqueeze(1))  # [B, 1]
    return logits.masked_fill(logits < threshold, float("-inf"))


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """float [B, V] -> int64 [B], the first index of each row's maximum."""
    return logits.argmax(dim=-1)


def sample(sampler, logits: torch.Tensor, rows: list):
    """The whole sampling step: the core Sampler's own choice (see tokenmill.sampling.sampler).

    A plugin that overrides "sample" receives the Sampler (its eos ids, op registry and cached
    per-row tensors), logits float32 [P, V] with P >= len(rows), and the rows; it returns a
    SamplerOutput whose token_ids is an int64 tensor [P] on the device.
    """
    return sampler.choose(logits, rows)
