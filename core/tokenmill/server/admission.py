"""Admission control: bounds on the work queued ahead of the engine, answered with 503 + Retry-After.

A request counts as queued from admission until its first output (its prompt is then prefilled),
by its sequences (prompts x n) and its prompt tokens (times n: each sample is its own sequence to
the scheduler). Past either limit a request is refused at once, and one that is admitted but not
started within max_queue_wait_s is aborted, so no client waits without bound. The counts live
here, on the event loop, because the engine's own waiting count is a snapshot taken between steps
and misses a burst that arrives within one step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tokenmill.outputs import RequestOutput
from tokenmill.server.error_handlers import ApiError
from tokenmill.server.limits import ServerLimits


class Ticket:
    """One admitted prompt's share of the queue; released once it starts or ends (idempotent)."""

    def __init__(self, admission: Admission, num_seqs: int, num_tokens: int) -> None:
        self._admission, self.num_seqs, self.num_tokens = admission, num_seqs, num_tokens
        self._held = True

    def release(self) -> None:
        if getattr(self, "_held", False):
            self._held = False
            self._admission.queued_seqs -= self.num_seqs
            self._admission.pending_tokens -= self.num_tokens

    __del__ = release  # a stream dropped before it ever ran (its finally never runs) gives its share back


class Admission:
    """The server's queue counts and the limits they are held to (event-loop side only)."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.queued_seqs = 0
        self.pending_tokens = 0

    def admit(self, prompt_lens: list[int], n: int) -> list[Ticket]:
        """One ticket per prompt, or a 503 when the request would pass a queue limit (400 when it
        alone is larger than the limit, since retrying cannot help)."""
        seqs, tokens = len(prompt_lens) * n, sum(prompt_lens) * n
        limits = self.limits
        for what, amount, queued, limit, flag in (
                ("sequences", seqs, self.queued_seqs, limits.max_queued_seqs, "--max-queued-seqs"),
                ("prompt tokens", tokens, self.pending_tokens, limits.max_pending_prompt_tokens,
                 "--max-pending-prompt-tokens")):
            if amount > limit:
                raise ApiError(400, f"this request alone asks for {amount} {what} (prompts x n), more than the "
                                    f"server queues at once ({limit}, {flag}); split it into smaller requests",
                               param="n" if what == "sequences" else "prompt")
            if queued + amount > limit:
                raise self._busy(f"{queued} {what} are already queued and this request adds {amount}, past the "
                                 f"server's limit of {limit} ({flag})")
        self.queued_seqs += seqs
        self.pending_tokens += tokens
        return [Ticket(self, n, length * n) for length in prompt_lens]

    def _busy(self, why: str) -> ApiError:
        retry = self.limits.retry_after_s
        return ApiError(503, f"the server is busy: {why}; retry after {retry} s", code="server_busy",
                        headers={"Retry-After": str(retry)})

    async def bounded(self, ticket: Ticket, stream: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
        """`stream` with its ticket released at the first output, and a 503 (the request aborted)
        when that output does not come within max_queue_wait_s."""
        try:
            try:
                first = await asyncio.wait_for(anext(stream), self.limits.max_queue_wait_s)
            except asyncio.TimeoutError:
                raise self._busy(f"this request waited {self.limits.max_queue_wait_s:g} s without starting "
                                 f"(--max-queue-wait)") from None
            ticket.release()
            yield first
            async for output in stream:
                yield output
        finally:
            ticket.release()
            await stream.aclose()
