"""Repetition (HF/CTRL), presence and frequency (OpenAI) penalties, applied to a batch of logit rows."""

from __future__ import annotations

from itertools import chain

import torch


def token_positions(token_lists: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (row, token id) occurrence of R ragged lists, flattened: int64 [L] rows and [L] ids.

    Penalties then touch only the L seen entries instead of dense [R, V] tensors: sequences are a
    few hundred tokens long while the vocabulary has 50k-150k entries.
    """
    ids = torch.tensor(list(chain.from_iterable(token_lists)), dtype=torch.int64, device=device)  # [L]
    lengths = torch.tensor([len(t) for t in token_lists], dtype=torch.int64, device=device)  # [R]
    rows = torch.repeat_interleave(torch.arange(len(token_lists), device=device), lengths)  # [L]
    return rows, ids


def _unique_pairs(rows: torch.Tensor, ids: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    keys = torch.unique(rows * vocab + ids)  # [U]
    return keys // vocab, keys % vocab


def apply_repetition_penalty(
    logits: torch.Tensor, rows: torch.Tensor, ids: torch.Tensor, penalty: torch.Tensor
) -> torch.Tensor:
    """HF's RepetitionPenaltyLogitsProcessor, per row and in place: each seen token's logit is
    divided by the penalty when positive and multiplied by it when negative, once however often
    the token was seen.

    logits float32 [R, V]; rows, ids int64 [L] (occurrences in prompt and output); penalty [R].
    """
    rows, ids = _unique_pairs(rows, ids, logits.shape[1])  # [U] each
    values = logits[rows, ids]  # [U]
    p = penalty[rows]  # [U]
    logits[rows, ids] = torch.where(values < 0, values * p, values / p)
    return logits


def apply_presence_frequency(
    logits: torch.Tensor, rows: torch.Tensor, ids: torch.Tensor, presence: torch.Tensor, frequency: torch.Tensor
) -> torch.Tensor:
    """OpenAI's formula, in place: logit -= count * frequency + (count > 0) * presence.

    logits float32 [R, V]; rows, ids int64 [L] (occurrences in the output); presence, frequency [R].
    """
    logits.index_put_((rows, ids), -frequency[rows], accumulate=True)  # once per occurrence
    u_rows, u_ids = _unique_pairs(rows, ids, logits.shape[1])  # [U] each
    logits.index_put_((u_rows, u_ids), -presence[u_rows], accumulate=True)  # once per seen token
    return logits


def apply_penalties(
    logits: torch.Tensor,
    prompt_ids: list[list[int]],
    output_ids: list[list[int]],
    repetition: list[float],
    presence: list[float],
    frequency: list[float],
) -> torch.Tensor:
    """All three penalties on logits float32 [R, V], in place; returns logits.

    Repetition looks at prompt and output tokens (vLLM and HF) and goes first; presence and
    frequency look at output tokens only (vLLM and OpenAI). A penalty at its no-op value for
    every row is skipped.
    """
    device, dtype = logits.device, logits.dtype
    out_rows, out_ids = token_positions(output_ids, device)  # [Lo] each
    if any(r != 1.0 for r in repetition):
        p_rows, p_ids = token_positions(prompt_ids, device)  # [Lp] each
        rep = torch.tensor(repetition, dtype=dtype, device=device)  # [R]
        apply_repetition_penalty(logits, torch.cat([p_rows, out_rows]), torch.cat([p_ids, out_ids]), rep)
    if out_ids.numel() and (any(p != 0.0 for p in presence) or any(f != 0.0 for f in frequency)):
        pres = torch.tensor(presence, dtype=dtype, device=device)  # [R]
        freq = torch.tensor(frequency, dtype=dtype, device=device)  # [R]
        apply_presence_frequency(logits, out_rows, out_ids, pres, freq)
    return logits
