"""Sampling with fixed shapes and no host reads: what static-shape platforms (XLA, HPU graphs) run.

Every row of the padded batch goes through the same ops, and greedy rows are chosen with a
`where` at the end, so no shape depends on which rows are greedy. The only shapes that vary are
set by the batch's parameters on the host, from a small fixed set: the padded batch size P and the
candidate count K (a power of two >= the batch's largest top_k, or the whole vocabulary when a
row has top_k off). No tensor value is read back until the engine takes the sampled ids.
"""

from __future__ import annotations

import torch

from tokenmill.ops import OpRegistry
from tokenmill.sampling.noise import log_uniform_noise
from tokenmill.sampling.params import SamplingParams
from tokenmill.sampling.row_tensors import RowTensors

_PAD_PARAMS = SamplingParams(temperature=0.0)  # padding rows: greedy, their token discarded


class _PadRow:
    """A stand-in row for padding: greedy, unseeded."""

    params = _PAD_PARAMS
    generator = None


_PAD_ROW = _PadRow()


def static_sample(logits: torch.Tensor, rows: list, ops: OpRegistry, params: RowTensors) -> torch.Tensor:
    """logits float32 [P, V] (P >= len(rows); modified in place) -> int64 [P]; rows past len(rows) are padding."""
    padded = list(rows) + [_PAD_ROW] * (logits.shape[0] - len(rows))
    greedy = ops.argmax(logits)  # [P]
    if all(r.params.is_greedy for r in padded):
        return greedy
    temps = params.get(padded, "temperature", logits.dtype, logits.device, "static")  # [P]
    x = logits.div_(torch.where(temps > 0, temps, torch.ones_like(temps)).unsqueeze(1))  # [P, V]
    vocab = x.shape[1]
    top_k = [r.params.top_k for r in padded if not r.params.is_greedy]
    narrow = all(0 < k < vocab for k in top_k)
    drawn = _narrow(x, padded, ops, params, vocab) if narrow else _wide(x, padded, ops, params)
    is_greedy = temps <= 0  # [P]
    return torch.where(is_greedy, greedy, drawn)


def _narrow(x: torch.Tensor, rows: list, ops: OpRegistry, params: RowTensors, vocab: int) -> torch.Tensor:
    """Every drawing row has 0 < top_k < V: race among the top K = pow2 >= max top_k candidates."""
    largest = max(r.params.top_k for r in rows if not r.params.is_greedy)
    k_cap = min(vocab, 1 << (largest - 1).bit_length())
    vals, ids = x.topk(k_cap, dim=-1)  # [P, K] each, best first
    k = [r.params.top_k if 0 < r.params.top_k < vocab else k_cap for r in rows]
    k_t = params.get(rows, "top_k", torch.int64, x.device, "static").clamp(1, k_cap)  # [P]; greedy rows' k unused
    vals = _truncate(vals, rows, ops, params, k_t)  # [P, K]
    choice = _race(vals, rows, [min(n, k_cap) for n in k]).unsqueeze(1)  # [P, 1]
    return ids.gather(1, choice).squeeze(1)  # [P]


def _wide(x: torch.Tensor, rows: list, ops: OpRegistry, params: RowTensors) -> torch.Tensor:
    """Some drawing row has top_k off: work over the whole vocabulary [P, V]."""
    top_k = None
    if any(r.params.top_k > 0 for r in rows):
        top_k = params.get(rows, "top_k", torch.int64, x.device, "static")  # [P], <= 0 or >= V is off
    return _race(_truncate(x, rows, ops, params, top_k), rows, None)


def _truncate(x: torch.Tensor, rows: list, ops: OpRegistry, params: RowTensors,
              top_k: torch.Tensor | None) -> torch.Tensor:
    """min_p, then top_k/top_p through the op registry; each only when some row of the batch uses it.

    Which of them run is decided from the parameters on the host, so the set of graphs stays
    small; rows whose value is "off" pass through unchanged.
    """
    if any(r.params.min_p > 0.0 for r in rows):
        min_p = params.get(rows, "min_p", x.dtype, x.device, "static")  # [P], 0 keeps everything
        floor = torch.where(min_p > 0, min_p.log(), torch.full_like(min_p, float("-inf")))  # [P]
        x = x.masked_fill_(x < x.amax(dim=-1, keepdim=True) + floor.unsqueeze(1), float("-inf"))
    top_p = None
    if any(r.params.top_p < 1.0 for r in rows):
        top_p = params.get(rows, "top_p", torch.float32, x.device, "static")  # [P], 1.0 is off
    return ops.top_k_top_p(x, top_k, top_p)


def _race(x: torch.Tensor, rows: list, counts: list[int] | None) -> torch.Tensor:
    """The exponential race over x [P, C] (masked entries -inf) -> int64 [P] column indices."""
    probs = x.sub_(x.amax(dim=-1, keepdim=True)).exp_()  # [P, C], unnormalised
    noise = log_uniform_noise(probs, [r.generator for r in rows], counts)  # [P, C], all < 0
    return probs.div_(noise).argmin(dim=-1)
