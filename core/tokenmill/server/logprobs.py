"""Format the engine's per-position logprob dicts as OpenAI's completion and chat logprob blocks."""

from __future__ import annotations

from typing import Any

from tokenmill.outputs import PositionLogprobs
from tokenmill.server.protocol import CompletionLogprobs, TokenLogprob, TopLogprob


def _chosen(token_id: int, entry: PositionLogprobs | None, tokenizer: Any) -> tuple[str, float | None]:
    """The decoded text and logprob of the token actually at this position."""
    if entry and token_id in entry:
        logprob, _, text = entry[token_id]
        return text, logprob
    return tokenizer.decode([token_id]), None


def _by_rank(entry: PositionLogprobs, limit: int) -> list[tuple[int, tuple[float, int, str]]]:
    return sorted(((tid, e) for tid, e in entry.items() if e[1] <= limit), key=lambda item: item[1][1])


def extend_completion_logprobs(block: CompletionLogprobs, token_ids: list[int],
                               entries: list[PositionLogprobs | None], tokenizer: Any, offset: int) -> int:
    """Append tokens (with their top logprobs) to a completions block; returns the next text offset.

    `entries[i]` is the engine's dict for `token_ids[i]` (None for the first prompt token, which
    nothing predicts). Top logprobs hold every entry the engine gave: the top N plus the chosen one.
    """
    for token_id, entry in zip(token_ids, entries):
        text, logprob = _chosen(token_id, entry, tokenizer)
        block.tokens.append(text)
        block.token_logprobs.append(logprob)
        block.top_logprobs.append(None if entry is None else {e[2]: e[0] for _, e in _by_rank(entry, 1 << 30)})
        block.text_offset.append(offset)
        offset += len(text)
    return offset


def chat_logprobs(token_ids: list[int], entries: list[PositionLogprobs], top_n: int,
                  tokenizer: Any) -> list[TokenLogprob]:
    """The chat `logprobs.content` list: one item per token with its `top_n` alternatives by rank."""
    content = []
    for token_id, entry in zip(token_ids, entries):
        text, logprob = _chosen(token_id, entry, tokenizer)
        top = [TopLogprob(token=e[2], logprob=e[0], bytes=list(e[2].encode())) for _, e in _by_rank(entry or {}, top_n)]
        content.append(TokenLogprob(token=text, logprob=-9999.0 if logprob is None else logprob,
                                    bytes=list(text.encode()), top_logprobs=top))
    return content
