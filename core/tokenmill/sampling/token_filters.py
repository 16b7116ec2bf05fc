"""Per-request token filters: allowed_token_ids, bad_words and logit_bias (OpenAI's and vLLM's fields)."""

from __future__ import annotations

from typing import Any

import torch

from tokenmill.errors import RequestError
from tokenmill.sampling.params import SamplingParams


class TokenFilters:
    """What one request does to its logits each step, built once per request on the sampling device.

    allowed: bool [V], True where a token may be sampled (vLLM's allowed_token_ids);
    banned: int64 [N], tokens never sampled (single-token bad words);
    sequences: multi-token bad words as (prefix, last token): `last` is banned right after `prefix`;
    bias_ids / bias_values: int64 [M] / float32 [M], added to those tokens' logits (logit_bias).
    """

    __slots__ = ("allowed", "banned", "sequences", "bias_ids", "bias_values")

    def __init__(self, allowed: torch.Tensor | None, banned: torch.Tensor | None,
                 sequences: list[tuple[list[int], int]], bias: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        self.allowed = allowed
        self.banned = banned
        self.sequences = sequences
        self.bias_ids, self.bias_values = bias if bias is not None else (None, None)

    def apply(self, row: torch.Tensor, output_ids: list[int]) -> None:
        """Filter one row of logits float32 [V] in place, given the tokens generated so far."""
        if self.allowed is not None:
            row.masked_fill_(~self.allowed, float("-inf"))
        if self.banned is not None:
            row.index_fill_(0, self.banned, float("-inf"))
        for prefix, last in self.sequences:
            if len(output_ids) >= len(prefix) and output_ids[len(output_ids) - len(prefix):] == prefix:
                row[last] = float("-inf")
        if self.bias_ids is not None:
            row.index_add_(0, self.bias_ids, self.bias_values)


def apply_filters(logits: torch.Tensor, rows: list) -> None:
    """Every filtered row of logits float32 [P, V] in place; rows without filters are not touched."""
    for i, row in enumerate(rows):
        filters = getattr(row, "filters", None)  # rows built by hand (plugins, the kit) may lack it
        if filters is not None:
            filters.apply(logits[i], row.output_token_ids)


def build_filters(params: SamplingParams, tokenizer: Any, vocab_size: int,
                  device: torch.device) -> TokenFilters | None:
    """The request's filters, or None when it uses none; a token id outside the vocabulary is refused."""
    if not (params.allowed_token_ids or params.bad_words or params.logit_bias):
        return None
    allowed = None
    if params.allowed_token_ids:
        _check_ids(params.allowed_token_ids, vocab_size, "allowed_token_ids")
        allowed = torch.zeros(vocab_size, dtype=torch.bool, device=device)  # [V]
        allowed[torch.tensor(params.allowed_token_ids, dtype=torch.int64, device=device)] = True
    banned, sequences = _bad_word_ids(params.bad_words or [], tokenizer, vocab_size)
    bias = None
    if params.logit_bias:
        ids = list(params.logit_bias)
        _check_ids(ids, vocab_size, "logit_bias")
        bias = (torch.tensor(ids, dtype=torch.int64, device=device),  # [M]
                torch.tensor([params.logit_bias[i] for i in ids], dtype=torch.float32, device=device))  # [M]
    banned_t = torch.tensor(sorted(banned), dtype=torch.int64, device=device) if banned else None  # [N]
    return TokenFilters(allowed, banned_t, sequences, bias)


def _check_ids(ids: list[int], vocab_size: int, name: str) -> None:
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise RequestError(f"{name} holds token ids {bad[:5]} outside the vocabulary [0, {vocab_size})")


def _bad_word_ids(words: list[str], tokenizer: Any, vocab_size: int) -> tuple[set[int], list[tuple[list[int], int]]]:
    """Each bad word as the tokens it encodes to, alone and after a space (as vLLM bans both spellings)."""
    banned: set[int] = set()
    sequences: list[tuple[list[int], int]] = []
    for word in words:
        spellings = {tuple(tokenizer(text, add_special_tokens=False).input_ids) for text in (word, " " + word.lstrip())}
        for ids in spellings:
            ids = [t for t in ids if t < vocab_size]
            if len(ids) == 1:
                banned.add(ids[0])
            elif ids:
                sequences.append((ids[:-1], ids[-1]))
    return banned, sequences
