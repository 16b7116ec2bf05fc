"""Async scheduling: the engine step left in flight, and when the engine must not leave one.

With async scheduling on, EngineCore keeps at most one step in flight: step n is launched (the
model and the sampler issued, its sampled token ids copied to the host without waiting), then
step n-1's tokens are read and processed while step n runs, and step n+1 is scheduled and
launched before step n's tokens are read. Every request that samples in a launched step holds
one pending token (sched.Request.num_pending_tokens) until then: the scheduler counts it for
positions, slots, max_tokens and max_model_len, the KV manager hashes no block holding it, and
the runner fills its input row on the device from the previous step's sampled-token tensor.
A request that stopped at step n-1 may already have a row in step n; that row's token is
discarded, and its blocks were freed when it stopped.

A step is completed synchronously (its tokens read before the next schedule) when any request
it samples needs the host to know its earlier tokens' values before its next sample, or asks for
what the sampler builds on the host:
- penalties that read the output tokens (repetition, presence, frequency),
- structured outputs (the grammar accepts each token before the next mask),
- multi-token bad words (matched against the last tokens),
- logprobs of sampled tokens and prompt logprobs (built on the host by the sampler and runner).
min_tokens, stop token ids, EOS, max_tokens, seeds, n > 1, chunked prefill, prefix caching,
preemption and aborts all run asynchronously. The whole engine runs synchronously on
static-shape platforms (Platform.static_shapes: the XLA/HPU step already ends in the platform's
sync, and its padded sampler reads the batch on the device) and with tensor parallelism (the
driver broadcasts each step's token ids to the workers from the host).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from tokenmill.config import EngineArgs
from tokenmill.errors import PluginError
from tokenmill.sampling.sampler import SamplingRow
from tokenmill.sched.output import SchedulerOutput
from tokenmill.sched.request import Request
from tokenmill.worker.model_runner import PendingTokens, RunnerOutput

log = logging.getLogger(__name__)


@dataclass(slots=True)
class InflightStep:
    """A launched step: its sampled tokens on the device, on their way to the host."""

    out: SchedulerOutput
    result: RunnerOutput  # kept for its prompt logits, recorded when the step completes
    sync: bool  # complete it before the next schedule (see the module docstring)
    token_ids: torch.Tensor | None = None  # int64 [B_s] on the device; None: nothing sampled
    copy: Any = None  # the HostCopy of token_ids (ExecutionContext.to_host)
    logprobs: list[tuple[Any, float | None]] = field(default_factory=list)  # per sampled row
    marked: list[Request] = field(default_factory=list)  # requests given a pending token by this step

    def pending_tokens(self) -> PendingTokens | None:
        """What the next step's runner needs to fill the rows of this step's pending tokens."""
        if self.token_ids is None:
            return None
        return PendingTokens(self.token_ids, {r: i for i, r in enumerate(self.result.sample_ids)})


def needs_sync(rows: list[SamplingRow], wants_prompt_logprobs: bool) -> bool:
    """True when a step sampling `rows` must be completed before the next one is scheduled."""
    return wants_prompt_logprobs or any(row.reads_outputs or row.params.logprobs is not None for row in rows)


def start_host_copy(execution: Any, tensor: torch.Tensor) -> Any:
    """The platform's non-blocking copy of `tensor` to the host, or a copy made when waited on."""
    to_host = getattr(execution, "to_host", None)  # optional (interfaces.ExecutionContext)
    if to_host is None:
        from tokenmill.plugin_base.execution import CopyOnWait

        return CopyOnWait(tensor)
    return to_host(tensor)


def resolve_async_scheduling(args: EngineArgs, platform: Any) -> bool:
    """Whether the engine runs async: the user's --async-scheduling, else the platform's choice.

    Static-shape platforms and tensor parallelism always run synchronously (said in the log).
    """
    chosen = getattr(platform, "async_scheduling", False)
    if not isinstance(chosen, bool):
        raise PluginError(f"platform {platform.name!r} sets async_scheduling={chosen!r}; it must be True or "
                          f"False (fix the plugin)")
    wanted = chosen if args.async_scheduling is None else args.async_scheduling
    if not wanted:
        return False
    why = ("the platform pads static shapes" if platform.static_shapes else
           "tensor parallelism broadcasts each step's tokens from the host" if args.tensor_parallel_size > 1 else None)
    if why is not None:
        level = logging.WARNING if args.async_scheduling else logging.INFO
        log.log(level, "async scheduling is off: %s; every step runs synchronously", why)
        return False
    return True
