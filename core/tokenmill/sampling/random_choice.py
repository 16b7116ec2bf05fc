"""Random choice of one token per row: temperature, min_p, top-k/top-p truncation, the exponential race."""

from __future__ import annotations

import torch

from tokenmill.ops import OpRegistry
from tokenmill.sampling.noise import log_uniform_noise
from tokenmill.sampling.row_tensors import RowTensors


def sample_rows(logits: torch.Tensor, rows: list, ops: OpRegistry, params: RowTensors) -> torch.Tensor:
    """Random rows: logits float32 [R, V] (modified in place), rows of SamplingRow -> int64 [R].

    A row with a top_k below the vocabulary size is drawn among its top_k candidates only: one
    `topk` of the batch's largest k replaces a sort of the whole vocabulary, and min_p and top_p
    then work on [R, K] instead of [R, V]. Which path a row takes depends only on its own
    parameters, and a seeded row draws exactly as many uniforms as its path needs (k or V), so
    its sample never depends on the other rows of the batch.
    """
    device, dtype = logits.device, logits.dtype
    temps = params.get(rows, "temperature", dtype, device)  # [R]
    x = logits.div_(temps.unsqueeze(1))  # [R, V]
    vocab = x.shape[1]
    narrow = [i for i, r in enumerate(rows) if 0 < r.params.top_k < vocab]
    if len(narrow) == len(rows):
        return _race_top_k(x, rows, ops, params)
    if not narrow:
        return _race_full(x, rows, ops, params)
    wide = [i for i, r in enumerate(rows) if not 0 < r.params.top_k < vocab]
    n_idx, w_idx = index_tensor(narrow, device), index_tensor(wide, device)  # [N], [W]
    out = torch.empty(len(rows), dtype=torch.int64, device=device)  # [R]
    out[n_idx] = _race_top_k(x.index_select(0, n_idx), [rows[i] for i in narrow], ops, params)
    out[w_idx] = _race_full(x.index_select(0, w_idx), [rows[i] for i in wide], ops, params)
    return out


def _race_full(x: torch.Tensor, rows: list, ops: OpRegistry, params: RowTensors) -> torch.Tensor:
    """x [R, V] (temperature applied) -> int64 [R], over the whole vocabulary."""
    x = _min_p(x, rows, params, "wide")
    top_p = _top_p(rows, x.device, params, "wide")
    if top_p is not None:
        x = ops.top_k_top_p(x, None, top_p)
    # Unnormalised probabilities suffice: the race ignores a positive factor per row.
    probs = x.sub_(x.amax(dim=-1, keepdim=True)).exp_()  # [R, V]
    noise = log_uniform_noise(probs, [r.generator for r in rows])  # [R, V], all < 0
    return probs.div_(noise).argmin(dim=-1)  # the exponential race; masked tokens give 0


def _race_top_k(x: torch.Tensor, rows: list, ops: OpRegistry, params: RowTensors) -> torch.Tensor:
    """x [R, V] (temperature applied), every row with 0 < top_k < V -> int64 [R]."""
    k = [r.params.top_k for r in rows]
    vals, ids = x.topk(max(k), dim=-1)  # [R, K] each, best first
    vals = _min_p(vals, rows, params, "narrow")
    k_t = params.get(rows, "top_k", torch.int64, x.device, "narrow")  # [R]
    vals = ops.top_k_top_p(vals, k_t, _top_p(rows, x.device, params, "narrow"))  # [R, K]: past each row's k is -inf
    probs = vals.sub_(vals.amax(dim=-1, keepdim=True)).exp_()  # [R, K]
    noise = log_uniform_noise(probs, [r.generator for r in rows], k)  # [R, K], all < 0
    choice = probs.div_(noise).argmin(dim=-1, keepdim=True)  # [R, 1], a column of the candidates
    return ids.gather(1, choice).squeeze(1)  # [R]


def _min_p(x: torch.Tensor, rows: list, params: RowTensors, group: str) -> torch.Tensor:
    if not any(r.params.min_p > 0.0 for r in rows):
        return x
    return apply_min_p(x, params.get(rows, "min_p", x.dtype, x.device, group))


def _top_p(rows: list, device: torch.device, params: RowTensors, group: str) -> torch.Tensor | None:
    if not any(r.params.top_p < 1.0 for r in rows):
        return None
    return params.get(rows, "top_p", torch.float32, device, group)  # [R]


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the row's top probability, in place.

    logits float32 [R, V] (temperature already applied), min_p [R] -> the same tensor. Works in log
    space: p_j < min_p * p_max  <=>  logit_j < logit_max + log(min_p); min_p = 0 keeps everything.
    """
    threshold = logits.amax(dim=-1, keepdim=True) + min_p.log().unsqueeze(1)  # [R, 1]
    return logits.masked_fill_(logits < threshold, float("-inf"))


def index_tensor(positions: list[int], device: torch.device) -> torch.Tensor:
    """Row positions as an int64 [len(positions)] tensor on `device`, for index_select/index_copy_."""
    return torch.tensor(positions, dtype=torch.int64, device=device)
