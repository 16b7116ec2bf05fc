"""The API process's side of a request served by the engine-core process: deltas in, RequestOutputs out.

The engine process sends token ids only. Here each sample is detokenized incrementally, stop
strings are matched (a match ends the sample here at once and tells the engine to free it), and
logprob entries get their token texts, so the outputs equal what an in-process EngineCore emits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tokenmill.detokenizer import IncrementalDetokenizer
from tokenmill.engine import wire
from tokenmill.outputs import CompletionOutput, PositionLogprobs, RequestOutput
from tokenmill.sampling.params import SamplingParams


class TokenTexts:
    """Token id -> its text alone, as logprob entries show it; cached, as the same tokens recur."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._texts: dict[int, str] = {}

    def decorate(self, entry: wire.RawLogprobs | None) -> PositionLogprobs | None:
        if entry is None:
            return None
        texts = self._texts
        out = {}
        for token_id, (logprob, rank) in entry.items():
            text = texts.get(token_id)
            if text is None:
                text = texts[token_id] = self.tokenizer.decode([token_id])
            out[token_id] = (logprob, rank, text)
        return out


@dataclass(slots=True)
class _Sample:
    index: int
    detok: IncrementalDetokenizer
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[PositionLogprobs | None] | None = None
    cumulative_logprob: float | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    def finish(self, reason: str, stop_reason: int | str | None) -> None:
        if reason != "abort":
            self.detok.flush()  # release text held back in case it began a stop string
        self.finish_reason, self.stop_reason = reason, stop_reason

    def completion(self) -> CompletionOutput:
        return CompletionOutput(index=self.index, text=self.detok.text, token_ids=list(self.token_ids),
                                cumulative_logprob=self.cumulative_logprob,
                                logprobs=list(self.logprobs) if self.logprobs is not None else None,
                                finish_reason=self.finish_reason, stop_reason=self.stop_reason)


class ClientRequest:
    """One user request's n samples as the API process rebuilds them from the engine's deltas."""

    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int], params: SamplingParams,
                 tokenizer: Any) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.params = params
        self.arrival_time = time.monotonic()
        self.first_token_time: float | None = None
        self.num_cached_tokens = 0
        # the engine sends every entry, position 0's None included
        self.prompt_logprobs: list[PositionLogprobs | None] | None = [] if params.prompt_logprobs is not None else None
        self.samples = [_Sample(i, IncrementalDetokenizer(
            tokenizer, prompt_token_ids, skip_special_tokens=params.skip_special_tokens, stop=params.stop or [],
            include_stop_str_in_output=params.include_stop_str_in_output),
            logprobs=[] if params.logprobs is not None else None,
            cumulative_logprob=0.0 if params.logprobs is not None else None) for i in range(params.n)]

    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples)

    def apply(self, delta: wire.SampleDelta, texts: TokenTexts) -> str | None:
        """Take one sample's delta; returns the stop string if one matched here (the engine must be told)."""
        sample = self.samples[delta.index]
        if sample.finish_reason is not None:
            return None  # stopped here already; the engine's later tokens are dropped
        self.num_cached_tokens = delta.num_cached_tokens
        if delta.new_token_ids and self.first_token_time is None:
            self.first_token_time = time.monotonic()
        min_tokens = self.params.min_tokens
        for k, token_id in enumerate(delta.new_token_ids):
            sample.token_ids.append(token_id)
            if sample.logprobs is not None and delta.new_logprobs is not None:
                sample.logprobs.append(texts.decorate(delta.new_logprobs[k]))
            sample.detok.push_one(token_id)
            hit = sample.detok.stop_hit
            if hit is not None and len(sample.token_ids) >= min_tokens and not self._engine_stopped(delta, k):
                if sample.logprobs is not None:  # one token per step: the engine's sum is this token's
                    sample.cumulative_logprob = delta.cumulative_logprob
                sample.finish("stop", hit)
                return hit
        if sample.logprobs is not None:
            sample.cumulative_logprob = delta.cumulative_logprob
        if delta.finish_reason is not None:
            sample.finish(delta.finish_reason, delta.stop_reason)
        return None

    def _engine_stopped(self, delta: wire.SampleDelta, k: int) -> bool:
        """The engine ended the sample at this token for a reason it checks first (EOS, stop token)."""
        return k == len(delta.new_token_ids) - 1 and delta.finish_reason == "stop"

    def add_prompt_logprobs(self, entries: list[wire.RawLogprobs | None], texts: TokenTexts) -> None:
        if self.prompt_logprobs is not None:
            self.prompt_logprobs.extend(texts.decorate(e) for e in entries)

    def to_output(self) -> RequestOutput:
        """A snapshot whose lists are copies, as ParentState.to_output makes in process."""
        done = self.finished()
        metrics = {"arrival_time": self.arrival_time}
        if self.first_token_time is not None:
            metrics["first_token_time"] = self.first_token_time
        if done:
            metrics["finished_time"] = time.monotonic()
        return RequestOutput(request_id=self.request_id, prompt=self.prompt, prompt_token_ids=self.prompt_token_ids,
                             outputs=[s.completion() for s in self.samples], finished=done,
                             prompt_logprobs=list(self.prompt_logprobs) if self.prompt_logprobs is not None else None,
                             num_cached_tokens=self.num_cached_tokens, metrics=metrics)
