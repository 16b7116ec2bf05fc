"""Dense causal attention from unpaged K/V in float64: the reference every backend is held to."""

from __future__ import annotations

import torch


def causal_attention(
    query: torch.Tensor,  # [Q, Hq, D], the queries of positions start .. start + Q - 1
    key: torch.Tensor,  # [L, Hkv, D], the whole sequence's keys up to at least start + Q
    value: torch.Tensor,  # [L, Hkv, D]
    scale: float,
    start: int,
    window: int | None = None,
    soft_cap: float | None = None,
) -> torch.Tensor:  # [Q, Hq, D] float64 on the CPU
    """Softmax attention where the query at position p sees keys 0..p (p - window < j <= p with a
    window; scores s become soft_cap * tanh(s / soft_cap) with a cap); computed in float64."""
    num_rows, num_heads, _ = query.shape
    stop = start + num_rows
    q = query.detach().cpu().double()
    k = key[:stop].detach().cpu().double()
    v = value[:stop].detach().cpu().double()
    group = num_heads // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # [stop, Hq, D]: query head h reads KV head h // group
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale  # [Hq, Q, stop]
    if soft_cap is not None:
        scores = torch.tanh(scores / soft_cap) * soft_cap
    positions = torch.arange(start, stop).unsqueeze(1)  # [Q, 1]
    keys = torch.arange(stop).unsqueeze(0)  # [1, stop]
    hidden = keys > positions  # [Q, stop], True for future keys
    if window is not None:
        hidden |= keys <= positions - window  # and for keys behind the window
    scores = scores.masked_fill(hidden, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), v)


def causal_attention_chunked(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, start: int, rows_per_chunk: int = 256,
    window: int | None = None, soft_cap: float | None = None,
) -> torch.Tensor:  # [Q, Hq, D] float64
    """`causal_attention` over row chunks, so long sequences keep the score matrix small."""
    parts = [
        causal_attention(query[i : i + rows_per_chunk], key, value, scale, start + i, window, soft_cap)
        for i in range(0, query.shape[0], rows_per_chunk)
    ]
    return torch.cat(parts, dim=0)
