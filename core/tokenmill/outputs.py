"""What the engine hands back per request: RequestOutput and CompletionOutput (vLLM's names)."""

from __future__ import annotations

from dataclasses import dataclass, field

# One position's logprobs: token id -> (logprob, rank, decoded token). Rank 1 is the most likely.
Logprob = tuple[float, int, str]
PositionLogprobs = dict[int, Logprob]


@dataclass(slots=True)
class CompletionOutput:
    """One completion of a request (a request with n > 1 has n of these)."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    cumulative_logprob: float | None = None
    logprobs: list[PositionLogprobs] | None = None  # one dict per generated token when asked for
    finish_reason: str | None = None  # "stop", "length", "abort", or None while running
    stop_reason: int | str | None = None  # the stop string or token id that ended it

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(slots=True)
class RequestOutput:
    """The state of one request after an engine step; `outputs` are cumulative."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    prompt_logprobs: list[PositionLogprobs | None] | None = None  # first entry is None
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    metrics: dict[str, float] = field(default_factory=dict)  # arrival, first_token, finished times
