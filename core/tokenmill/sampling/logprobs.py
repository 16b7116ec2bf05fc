"""Logprobs of chosen tokens with their ranks and the top-N alternatives, for prompts and outputs."""

from __future__ import annotations

import torch

from tokenmill.sampling.noise import new_generator

__all__ = ["PositionLogprobs", "position_logprobs", "rows_logprobs", "new_generator"]

# token id -> (logprob, rank), rank 1 = the most likely token. The engine adds the decoded text.
PositionLogprobs = dict[int, tuple[float, int]]

_CHUNK_ROWS = 512  # bounds the float32 [rows, V] log-softmax held at once for long prompts


def position_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, num_top: int) -> list[PositionLogprobs]:
    """For each of N positions: the logprob and rank of token_ids[i], plus the num_top best tokens.

    logits [N, V] (any float dtype; the log-softmax is taken in float32), token_ids int64 [N].
    Used for prompt_logprobs (logits of positions 0..N-1 against prompt tokens 1..N) and for
    generated tokens. Works in chunks of rows so a long prompt never needs a second [N, V] copy.
    """
    out: list[PositionLogprobs] = []
    for start in range(0, logits.shape[0], _CHUNK_ROWS):
        chunk = logits[start : start + _CHUNK_ROWS].float().log_softmax(dim=-1)  # [n, V]
        ids = token_ids[start : start + _CHUNK_ROWS]
        out.extend(rows_logprobs(chunk, ids, [num_top] * chunk.shape[0]))
    return out


def rows_logprobs(logprobs: torch.Tensor, token_ids: torch.Tensor, num_tops: list[int]) -> list[PositionLogprobs]:
    """Like position_logprobs on already log-softmaxed rows [R, V], with a top-N count per row.

    The chosen token comes first, ranked 1 + the number of tokens with a strictly higher logprob;
    the top-N entries carry ranks 1..N. One topk for the whole batch and one transfer to Python.
    """
    token_ids = token_ids.to(logprobs.device)
    chosen = logprobs.gather(1, token_ids.unsqueeze(1))  # [R, 1]
    ranks = (logprobs > chosen).sum(dim=-1) + 1  # [R]
    max_top = min(max(num_tops, default=0), logprobs.shape[1])
    if max_top > 0:
        top_lp, top_ids = logprobs.topk(max_top, dim=-1)  # [R, K] each, best first
        top_lp, top_ids = top_lp.tolist(), top_ids.tolist()
    chosen_l, ranks_l, ids_l = chosen.squeeze(1).tolist(), ranks.tolist(), token_ids.tolist()
    result: list[PositionLogprobs] = []
    for r, num_top in enumerate(num_tops):
        entry: PositionLogprobs = {ids_l[r]: (chosen_l[r], ranks_l[r])}  # the chosen token first
        for k in range(min(num_top, max_top)):
            entry.setdefault(top_ids[r][k], (top_lp[r][k], k + 1))
        result.append(entry)
    return result
