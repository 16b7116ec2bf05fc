"""The mixture-of-experts reference: top-k routing and the grouped expert MLP, in plain torch.

`fused_moe` groups the T*K (token, expert) pairs by expert with one stable sort, so each expert
runs one matmul over its contiguous segment: a Python loop over the experts that received tokens,
never over tokens. Weights are stacked per expert: w13 [E, 2I, H] holds each expert's gate rows
then up rows, w2 [E, H, I] its down projection.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def route(router_logits: torch.Tensor, top_k: int, renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax top-k routing (Mixtral, Qwen-MoE): logits [T, E] -> (weights float32 [T, K], ids int64 [T, K]).

    The softmax is over all E experts in float32; `renormalize` rescales the K picked weights to
    sum to 1 (Mixtral always, Qwen by norm_topk_prob).
    """
    probs = router_logits.float().softmax(dim=-1)  # [T, E]
    weights, ids = probs.topk(top_k, dim=-1)  # [T, K] each
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids


def sort_by_expert(topk_ids: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids int [T, K] -> (order int64 [T*K]: flat pair indices grouped by expert, counts int64 [E]).

    Pair p = t*K + k belongs to token p // K. The sort is stable, so within one expert's segment
    tokens keep their order (the result does not depend on the sort's tie-breaking).
    """
    flat = topk_ids.reshape(-1).to(torch.int64)  # [T*K]
    order = torch.sort(flat, stable=True).indices  # [T*K]
    counts = torch.bincount(flat, minlength=num_experts)  # [E]
    return order, counts


def combine(expert_out: torch.Tensor, order: torch.Tensor, topk_weights: torch.Tensor, num_tokens: int,
            top_k: int, dtype: torch.dtype) -> torch.Tensor:
    """Sum each token's K expert outputs (rows in `order`'s sorted layout) by its routing weights.

    expert_out [T*K, H] (any float dtype) -> [T, H] in `dtype`; the weighted sum is in float32.
    """
    weights = topk_weights.reshape(-1).float().index_select(0, order)  # [T*K]
    weighted = expert_out.float() * weights.unsqueeze(1)  # [T*K, H]
    out = torch.zeros(num_tokens, expert_out.shape[1], dtype=torch.float32, device=expert_out.device)
    return out.index_add_(0, order // top_k, weighted).to(dtype)


def fused_moe(
    x: torch.Tensor,  # [T, H]
    w13: torch.Tensor,  # [E, 2I, H]: gate rows, then up rows
    w2: torch.Tensor,  # [E, H, I]
    topk_weights: torch.Tensor,  # float32 [T, K]
    topk_ids: torch.Tensor,  # int [T, K], values in [0, E)
) -> torch.Tensor:  # [T, H] in x's dtype
    """sum_k topk_weights[t, k] * down_e(silu(gate_e(x_t)) * up_e(x_t)) with e = topk_ids[t, k]."""

    def expert_mlp(expert: int, rows: torch.Tensor) -> torch.Tensor:  # [n, H] -> [n, H]
        gate, up = F.linear(rows, w13[expert]).chunk(2, dim=-1)  # [n, I] each
        return F.linear(F.silu(gate) * up, w2[expert])

    return grouped_experts(x, topk_weights, topk_ids, w13.shape[0], expert_mlp)


def grouped_experts(x: torch.Tensor, topk_weights: torch.Tensor, topk_ids: torch.Tensor, num_experts: int,
                    expert_mlp: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The routed sum with each expert's MLP a callable: expert_mlp(e, rows [n, H]) -> [n, H].

    Packed experts (models/moe.py PackedExperts) run their linear methods through this.
    """
    num_tokens, top_k = topk_ids.shape
    order, counts = sort_by_expert(topk_ids, num_experts)
    rows = x.index_select(0, order // top_k)  # [T*K, H], grouped by expert
    out = torch.empty_like(rows)  # [T*K, H]
    start = 0
    for expert, count in enumerate(counts.tolist()):  # one host read: the segment bounds
        if count:
            out[start : start + count] = expert_mlp(expert, rows[start : start + count])
            start += count
    return combine(out, order, topk_weights, num_tokens, top_k, x.dtype)
