"""top_k_top_p without sorting the vocabulary: a partial top-k of candidates, then thresholds.

The reference sorts every row (V ~ 128k for Llama 3). The kept set of top-k and of top-p is a
prefix of the sorted row, so only its last value matters: this version takes the best
`candidates` logits with torch.topk, finds each row's cut-off there, and masks everything below
it. When a row's nucleus reaches past the candidates it falls back to the reference, so the
result is the reference's except where logits tie exactly at a cut-off (ties are all kept).
"""

from __future__ import annotations

import torch

from tokenmill.ops import reference

CANDIDATES = 1024  # logits examined per row before falling back to a full sort


def _cutoff_k(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[B]: the k-th best logit of each row, from sorted candidates values [B, C] (k <= C)."""
    return values.gather(1, (k - 1).unsqueeze(1)).squeeze(1)


def top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None) -> torch.Tensor:
    """Mask logits [B, V] outside each row's top_k (int64 [B], <= 0 or >= V off) and top_p
    nucleus (float32 [B], 1.0 off) to -inf; same contract as tokenmill.ops.reference."""
    if top_k is None and top_p is None:
        return logits
    batch, vocab = logits.shape
    k = torch.full((batch,), vocab, dtype=torch.int64, device=logits.device) if top_k is None else (
        torch.where(top_k <= 0, vocab, top_k.clamp(max=vocab)))
    k_on = k < vocab  # [B]
    p_on = (top_p < 1.0) if top_p is not None else torch.zeros_like(k_on)
    want = int(torch.where(k_on, k, 0).max()) if top_k is not None else 0
    cap = min(vocab, max(want, CANDIDATES if top_p is not None else 1))
    values = logits.topk(cap, dim=-1).values  # [B, C], descending
    rank = torch.arange(cap, device=logits.device).unsqueeze(0)  # [1, C]
    values = values.masked_fill(k_on.unsqueeze(1) & (rank >= k.unsqueeze(1)), float("-inf"))
    cutoff = torch.where(k_on, _cutoff_k(values, k.clamp(max=cap)), float("-inf"))  # [B]
    if top_p is not None:
        p_cut, exact = _cutoff_p(logits, values, k_on, top_p, cap == vocab)
        if not bool((exact | ~p_on).all()):
            return reference.top_k_top_p(logits, top_k, top_p)
        cutoff = torch.where(p_on, torch.maximum(cutoff, p_cut), cutoff)
    return logits.masked_fill(logits < cutoff.unsqueeze(1), float("-inf"))


def _cutoff_p(
    logits: torch.Tensor, values: torch.Tensor, k_on: torch.Tensor, top_p: torch.Tensor, whole_row: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """([B] lowest kept logit of the nucleus, [B] whether the candidates decided it exactly)."""
    norm = torch.where(k_on, values.logsumexp(-1), logits.float().logsumexp(-1))  # [B]
    probs = (values.float() - norm.unsqueeze(1)).exp()  # [B, C], renormalised over the top-k set
    before = probs.cumsum(-1) - probs  # mass strictly before each candidate
    keep = before <= top_p.unsqueeze(1)
    keep[:, 0] = True
    cut = values.masked_fill(~keep, float("inf")).amin(-1)  # [B]
    exact = ~keep[:, -1] | k_on | whole_row  # a dropped candidate, or the top-k set is all here
    return cut.to(logits.dtype), exact
