"""SchedulerOutput: the plan of one engine step, as the scheduler hands it to the model runner."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.sched.request import Request


@dataclass(slots=True)
class ScheduledRequest:
    """One request's share of a step: compute tokens [start, start + num_new_tokens)."""

    request: Request
    num_new_tokens: int
    start: int  # request.num_computed_tokens before this step; positions start here
    block_ids: list[int]  # the request's whole block table after this step's allocation (a copy)
    samples: bool  # this step reaches the newest token, so the runner samples one token for it


@dataclass(slots=True)
class SchedulerOutput:
    """Everything one step computes, plus what the scheduler did to make room for it."""

    scheduled: list[ScheduledRequest]
    num_batched_tokens: int  # sum of num_new_tokens; never above max_num_batched_tokens
    preempted_ids: list[str]  # lost their blocks this step; they will be recomputed later
    # (src, dst) copy-on-write pairs; the engine has the allocator copy them before the step runs.
    # Nothing produces them yet: shared blocks are full and immutable (prefix caching only).
    blocks_to_copy: list[tuple[int, int]] = field(default_factory=list)
    # Finished by the scheduler with FINISHED_LENGTH because the request alone outgrew the whole
    # KV pool (possible only when max_model_len exceeds the pool). Its blocks are already freed;
    # the engine only has to emit its final output.
    finished_ids: list[str] = field(default_factory=list)
