"""Per-request output state: detokenizing, stop conditions, logprobs and the RequestOutput view."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from tokenmill.detokenizer import IncrementalDetokenizer
from tokenmill.outputs import CompletionOutput, PositionLogprobs, RequestOutput
from tokenmill.sampling.params import SamplingParams
from tokenmill.sampling.sampler import SamplingRow
from tokenmill.sched.request import Request, RequestStatus


@dataclass(slots=True)
class SampleState:
    """One of a request's n samples: its scheduler Request and what it has produced."""

    request: Request
    index: int
    row: SamplingRow  # built once: it reads request.output_token_ids, which grows in place
    detok: IncrementalDetokenizer | None  # None in the engine-core process: the API process detokenizes
    completion: CompletionOutput
    num_sent: int = 0  # output tokens already handed out as deltas (step_deltas)

    def finish(self, reason: str, stop_reason: int | str | None = None) -> RequestStatus:
        """Record the end; returns the scheduler status that matches it."""
        if self.detok is not None:
            if reason != "abort":
                self.detok.flush()  # release text held back in case it began a stop string
            self.completion.text = self.detok.text
        self.completion.finish_reason = reason
        self.completion.stop_reason = stop_reason
        return RequestStatus.FINISHED_LENGTH if reason == "length" else RequestStatus.FINISHED_STOPPED


@dataclass(slots=True)
class ParentState:
    """A user request: its prompt, params and n samples."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    samples: list[SampleState] = field(default_factory=list)
    prompt_logprobs: list[PositionLogprobs | None] | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    final_only: bool = False  # emit only the finished output, not a snapshot every step
    num_prompt_lp_sent: int = 0  # prompt logprob entries already handed out as deltas

    def finished(self) -> bool:
        return all(s.completion.finish_reason is not None for s in self.samples)

    def to_output(self, done: bool | None = None) -> RequestOutput:
        """A snapshot whose lists are copies, so consumers can keep it across steps.

        `done` is `finished()` when the caller has it already."""
        outputs = [_copy_completion(s) for s in self.samples]
        metrics = {"arrival_time": self.arrival_time}
        if self.first_token_time is not None:
            metrics["first_token_time"] = self.first_token_time
        if done is None:
            done = self.finished()
        if done:
            metrics["finished_time"] = time.monotonic()
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            outputs=outputs,
            finished=done,
            prompt_logprobs=list(self.prompt_logprobs) if self.prompt_logprobs is not None else None,
            num_cached_tokens=self.samples[0].request.num_cached_tokens if self.samples else 0,
            metrics=metrics,
        )


def _copy_completion(sample: SampleState) -> CompletionOutput:
    c = sample.completion
    text = c.text if c.finish_reason is not None or sample.detok is None else sample.detok.text
    return CompletionOutput(
        index=c.index,
        text=text,
        token_ids=list(sample.request.output_token_ids),
        cumulative_logprob=c.cumulative_logprob,
        logprobs=list(c.logprobs) if c.logprobs is not None else None,
        finish_reason=c.finish_reason,
        stop_reason=c.stop_reason,
    )


def stop_reason_for(sample: SampleState, params: SamplingParams, token: int, eos_ids: set[int],
                    max_tokens: int, max_model_len: int) -> tuple[str, int | str | None] | None:
    """Why the sample must stop after `token` was appended (and pushed to the detokenizer), or None."""
    request = sample.request
    num_out = len(request.output_token_ids)
    if num_out >= params.min_tokens:
        if params.stop_token_ids and token in params.stop_token_ids:
            return "stop", token
        if not params.ignore_eos and token in eos_ids:
            return "stop", None
        if sample.detok is not None and sample.detok.stop_hit is not None:
            return "stop", sample.detok.stop_hit
    if num_out >= max_tokens or request.num_tokens >= max_model_len:
        return "length", None
    return None
