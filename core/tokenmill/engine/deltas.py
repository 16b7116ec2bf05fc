"""What each touched request gained in a step, as the engine-core process sends it (token ids only)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.engine.request_state import ParentState
from tokenmill.engine.wire import PromptLogprobsDelta, SampleDelta


@dataclass(slots=True)
class StepDeltas:
    samples: list[SampleDelta] = field(default_factory=list)
    prompt_logprobs: list[PromptLogprobsDelta] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # user requests that finished: the engine forgets them


def collect_deltas(parents: dict[str, ParentState], touched: set[str]) -> StepDeltas:
    """The new tokens (and logprobs) of every sample of the touched requests since the last call."""
    deltas = StepDeltas()
    for request_id in touched:
        parent = parents.get(request_id)
        if parent is None:
            continue
        for sample in parent.samples:
            delta = _sample_delta(request_id, sample)
            if delta is not None:
                deltas.samples.append(delta)
        if parent.prompt_logprobs is not None and len(parent.prompt_logprobs) > parent.num_prompt_lp_sent:
            deltas.prompt_logprobs.append(
                PromptLogprobsDelta(request_id, parent.prompt_logprobs[parent.num_prompt_lp_sent:]))
            parent.num_prompt_lp_sent = len(parent.prompt_logprobs)
        if parent.finished():
            deltas.done.append(request_id)
    return deltas


def _sample_delta(request_id: str, sample) -> SampleDelta | None:
    tokens, sent = sample.request.output_token_ids, sample.num_sent
    completion = sample.completion
    if sent == -1 or (len(tokens) == sent and completion.finish_reason is None):
        return None  # its finish was already sent, or it gained nothing
    logprobs = completion.logprobs[sent:] if completion.logprobs is not None else None
    sample.num_sent = -1 if completion.finish_reason is not None else len(tokens)
    return SampleDelta(request_id, sample.index, tokens[sent:], logprobs, completion.cumulative_logprob,
                       completion.finish_reason, completion.stop_reason, sample.request.num_cached_tokens)
