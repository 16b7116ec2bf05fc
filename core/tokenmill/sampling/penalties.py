"""Repetition (HF/CTRL), presence and frequency (OpenAI) penalties, applied to a batch of logit rows."""

from __future__ import annotations

from itertools import chain

import torch


def token_counts(token_lists: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """How often each token id occurs in each row's list: int32 [R, V], built with one scatter."""
    counts = torch.zeros(len(token_lists), vocab_size, dtype=torch.int32, device=device)  # [R, V]
    flat = list(chain.from_iterable(token_lists))
    if not flat:
        return counts
    ids = torch.tensor(flat, dtype=torch.int64, device=device)  # [L]
    lengths = torch.tensor([len(t) for t in token_lists], device=device)  # [R]
    rows = torch.repeat_interleave(torch.arange(len(token_lists), device=device), lengths)  # [L]
    counts.index_put_((rows, ids), torch.ones_like(ids, dtype=torch.int32), accumulate=True)
    return counts


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """HF's RepetitionPenaltyLogitsProcessor, per row: for every seen token a positive logit is
    divided by the penalty and a negative one multiplied by it.

    logits float32 [R, V], seen bool [R, V] (token in the prompt or the output), penalty [R].
    """
    p = penalty.unsqueeze(1)  # [R, 1]
    penalised = torch.where(logits < 0, logits * p, logits / p)  # [R, V]
    return torch.where(seen, penalised, logits)


def apply_presence_frequency(
    logits: torch.Tensor, counts: torch.Tensor, presence: torch.Tensor, frequency: torch.Tensor
) -> torch.Tensor:
    """OpenAI's formula over generated tokens: logit -= count * frequency + (count > 0) * presence.

    logits float32 [R, V], counts int32 [R, V] of output tokens, presence and frequency [R].
    """
    counts_f = counts.to(logits.dtype)  # [R, V]
    penalty = counts_f * frequency.unsqueeze(1) + (counts_f > 0).to(logits.dtype) * presence.unsqueeze(1)
    return logits - penalty


def apply_penalties(
    logits: torch.Tensor,
    prompt_ids: list[list[int]],
    output_ids: list[list[int]],
    repetition: list[float],
    presence: list[float],
    frequency: list[float],
) -> torch.Tensor:
    """All three penalties on logits float32 [R, V]; returns a new [R, V] tensor.

    Repetition looks at prompt and output tokens (vLLM and HF); presence and frequency at output
    tokens only (vLLM and OpenAI). Work that a penalty set to its no-op value needs is skipped.
    """
    vocab, device = logits.shape[1], logits.device
    counts = token_counts(output_ids, vocab, device)  # [R, V]
    if any(r != 1.0 for r in repetition):
        seen = (counts > 0) | (token_counts(prompt_ids, vocab, device) > 0)  # [R, V]
        rep = torch.tensor(repetition, dtype=logits.dtype, device=device)  # [R]
        logits = apply_repetition_penalty(logits, seen, rep)
    if any(p != 0.0 for p in presence) or any(f != 0.0 for f in frequency):
        pres = torch.tensor(presence, dtype=logits.dtype, device=device)  # [R]
        freq = torch.tensor(frequency, dtype=logits.dtype, device=device)  # [R]
        logits = apply_presence_frequency(logits, counts, pres, freq)
    return logits
