"""Incremental detokenization of one sequence, with stop strings matched on the decoded text.

Decoding uses `tokenizers.decoders.DecodeStream`, the tokenizers library's own streaming decoder
(vLLM v1 uses it too): it runs the prefix-offset method in Rust, holds back a token that ends
in an incomplete UTF-8 sequence (it never yields U+FFFD for one), and, prefilled with the last
prompt tokens, decodes the first generated tokens in context, so SentencePiece and byte-level
BPE leading spaces merge with their neighbours as a full decode would. For the rare decoder
whose output is not prefix-stable (DecodeStream then raises), the same prefix-offset method
continues in Python on a short window of ids.
"""

from __future__ import annotations

from array import array
from functools import lru_cache
from typing import Any, Sequence

from tokenizers.decoders import DecodeStream

_REPLACEMENT = "\ufffd"
_CONTEXT_TOKENS = 6  # prompt / output ids kept as decoding context before the undecoded tail
_MAX_BYTES_PER_CHAR = 4  # a UTF-8 character spans at most 4 byte tokens


class IncrementalDetokenizer:
    """Turns one sequence's generated token ids into text as they arrive.

    `push` returns only *released* text: text that could still be the start of a stop string is
    held back until it is decided, so a stop string never reaches the caller (unless
    include_stop_str_in_output). After a stop string matches, `stop_hit` names it, the text is
    cut before it, and further pushes return "". `flush` at the finish releases what is held.

    tokenizer: a transformers PreTrainedTokenizerFast (its backend_tokenizer is used) or a
    tokenizers.Tokenizer. Text equals tokenizer.decode of the generated ids in the prompt's
    context, without transformers' optional clean_up_tokenization_spaces (vLLM does the same).
    If the prompt ends inside a multi-byte character, the tokens of that character are decoded
    with the output, so the completed character appears in the output text.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_token_ids: Sequence[int],
        *,
        skip_special_tokens: bool = True,
        stop: Sequence[str] = (),
        include_stop_str_in_output: bool = False,
    ) -> None:
        self._backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        self._skip = skip_special_tokens
        self._stops = _StopStrings(stop)
        self._include_stop = include_stop_str_in_output
        self.stop_hit: str | None = None
        self._text = ""  # released so far
        self._held = ""  # decoded text not yet released (a possible stop-string start)
        self._fed = 0  # how much of _held the stop matcher has seen
        context, carried = self._prompt_context(list(prompt_token_ids[-_CONTEXT_TOKENS:]))
        self._context: list[int] = context  # ids before the tail whose decode ends cleanly
        self._tail: list[int] = []  # ids stepped since the last decoded chunk
        self._stream: DecodeStream | None = DecodeStream(ids=context, skip_special_tokens=skip_special_tokens)
        self._held = "".join(self._step(t) for t in carried)

    @property
    def text(self) -> str:
        """All text released so far."""
        return self._text

    def push(self, new_token_ids: Sequence[int]) -> str:
        """Decode newly generated ids; returns the text released by this call (maybe "")."""
        if self.stop_hit is not None:
            return ""
        for token_id in new_token_ids:
            self._held += self._step(token_id)
        return self._release(final=False)

    def push_one(self, token_id: int) -> str:
        """`push([token_id])` without the list: the engine's per-token call."""
        if self.stop_hit is not None:
            return ""
        self._held += self._step(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """At the finish: release held text, including an incomplete character as U+FFFD
        (as a full decode shows it). Returns the text released by this call."""
        if self.stop_hit is not None:
            return ""
        if self._tail:
            self._held += _after(self._decode(self._context + self._tail), self._decode(self._context))
            self._context, self._tail = (self._context + self._tail)[-_CONTEXT_TOKENS:], []
        return self._release(final=True)

    def _prompt_context(self, context: list[int]) -> tuple[list[int], list[int]]:
        """Split the prompt tail into clean context and the ids of a character it leaves unfinished."""
        carried: list[int] = []
        while context and len(carried) < _MAX_BYTES_PER_CHAR and self._decode(context).endswith(_REPLACEMENT):
            carried.insert(0, context.pop())
        if context and self._decode(context).endswith(_REPLACEMENT):
            return [], carried  # garbled prompt end: decode the output without context
        return context, carried

    def _step(self, token_id: int) -> str:
        """Feed one id; returns the newly decoded text, "" while a character is incomplete."""
        self._tail.append(token_id)
        chunk: str | None = None
        if self._stream is not None:
            try:
                chunk = self._stream.step(self._backend, token_id)
            except Exception:  # DecodeStream's InvalidPrefix: this decoder is not prefix-stable
                self._stream = None
        if self._stream is None:
            chunk = self._window_step()
        if chunk is None:
            return ""
        self._context, self._tail = (self._context + self._tail)[-_CONTEXT_TOKENS:], []
        return chunk

    def _window_step(self) -> str | None:
        """The prefix-offset method in Python: new text = decode(context + tail) - decode(context)."""
        base = self._decode(self._context)
        full = self._decode(self._context + self._tail)
        if len(full) <= len(base) or full.endswith(_REPLACEMENT):
            return None
        return _after(full, base)

    def _release(self, final: bool) -> str:
        """Move held text to released, cutting at the earliest stop string; keep a possible
        stop-string start held unless final."""
        fresh, self._fed = self._held[self._fed :], 0
        if not self._stops.stops:  # the common case: nothing to hold back
            out, self._held = self._held, ""
            self._text += out
            return out
        match = self._stops.feed(fresh) if fresh else None
        if match is not None:
            start = len(self._held) - len(fresh) + match[0]
            stop = match[1]
            out = self._held[: start + len(stop)] if self._include_stop else self._held[:start]
            self.stop_hit, self._held = stop, ""
        else:
            keep = 0 if final else min(self._stops.held_suffix(), len(self._held))
            out, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
        self._fed = len(self._held)
        self._text += out
        return out

    def _decode(self, ids: list[int]) -> str:
        return self._backend.decode(ids, skip_special_tokens=self._skip)


class _StopStrings:
    """Stop strings matched as text streams in: one Knuth-Morris-Pratt state per stop string.

    Memory is linear in the stops' total length: a failure table each (shared by every sample
    with the same stops) and one integer of state each per sample, where storing every prefix
    would be quadratic (a 40k-character stop took gigabytes). `feed` consumes new text once; the
    state of a stop is the length of the longest suffix of all text fed so far that is a prefix
    of it, so the text that must stay held back is the longest of those states.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._tables = [_failure_table(s) for s in self.stops]
        self._states = [0] * len(self.stops)

    def feed(self, text: str) -> tuple[int, str] | None:
        """Advance over `text`; returns (start in `text`, stop) of the earliest-starting stop that
        completes in it (the longest on a tie), or None. A match may begin in earlier text, so
        start can be negative; it never begins before the held suffix."""
        best: tuple[int, str] | None = None
        for k, (stop, table) in enumerate(zip(self.stops, self._tables)):
            state, end = self._states[k], -1
            for i, char in enumerate(text):
                while state and stop[state] != char:
                    state = table[state - 1]
                if stop[state] == char:
                    state += 1
                if state == len(stop):
                    end = i
                    break
            self._states[k] = state
            if end >= 0:
                start = end + 1 - len(stop)
                if best is None or (start, -len(stop)) < (best[0], -len(best[1])):
                    best = (start, stop)
        return best

    def held_suffix(self) -> int:
        """Length of the longest suffix of the text fed so far that could still grow into a stop."""
        return max(self._states, default=0)


@lru_cache(maxsize=64)
def _failure_table(stop: str) -> array:
    """KMP failure function: table[i] is the longest proper border of stop[: i + 1]."""
    table = array("i", [0]) * len(stop)
    border = 0
    for i in range(1, len(stop)):
        while border and stop[i] != stop[border]:
            border = table[border - 1]
        if stop[i] == stop[border]:
            border += 1
        table[i] = border
    return table


def _after(full: str, base: str) -> str:
    """full with its leading copy of base removed (the common prefix, if base is not a prefix)."""
    if full.startswith(base):
        return full[len(base) :]
    common = 0
    for a, b in zip(full, base):
        if a != b:
            break
        common += 1
    return full[common:]
