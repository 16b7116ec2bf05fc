"""Scheduler: continuous batching under a token budget, chunked prefill, preemption by recompute."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tokenmill.errors import RequestError
from tokenmill.sched.output import ScheduledRequest, SchedulerOutput
from tokenmill.sched.request import Request, RequestStatus

if TYPE_CHECKING:
    from tokenmill.kv.kv_cache_manager import KVCacheManager, PrefixHit


@dataclass(slots=True)
class _Step:
    """The plan being built by one `schedule()` call."""

    budget: int
    scheduled: dict[str, ScheduledRequest] = field(default_factory=dict)
    preempted: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)


class Scheduler:
    """Decides, every step, which tokens of which requests the model computes.

    There is no prefill/decode phase split: a step is a token budget (max_num_batched_tokens)
    filled first by the running requests, in admission order (a decode takes 1 token, a request
    still in prefill takes its next chunk), then by waiting requests, admitted in (priority,
    arrival) order while max_num_seqs allows, each reusing its cached prefix and taking as much of
    its prompt as the budget has left (chunked prefill). Admission stops at the first request whose
    blocks do not fit, so nobody is overtaken.
    When a running request needs a block and none is free, the scheduler preempts the running
    request with the largest (priority, admission order), i.e. lowest priority, then most recently
    admitted: its blocks are freed, its num_computed_tokens drops to 0 and it goes back to the
    front of the waiting queue, to be recomputed (outputs included) later. No request is admitted
    in a step that preempted, so a victim cannot bounce straight back.
    """

    def __init__(
        self, kv: "KVCacheManager", *, max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int
    ) -> None:
        limits = {"max_num_batched_tokens": max_num_batched_tokens, "max_num_seqs": max_num_seqs}
        for name, value in {**limits, "max_model_len": max_model_len}.items():
            if value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        self.kv = kv
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self._pool_tokens = kv.num_blocks * kv.block_size  # the most tokens one request can ever hold
        self.running: list[Request] = []  # in admission order
        self.waiting: list[Request] = []  # sorted by _waiting_key; index 0 is admitted next
        self._requests: dict[str, Request] = {}  # every unfinished request
        self._arrival_order: dict[str, int] = {}  # tie-break for equal arrival times
        self._admission_order: dict[str, int] = {}  # last admission of each running request
        self._counter = 0

    # ------------------------------------------------------------------ queries

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_unfinished_requests(self) -> bool:
        return bool(self.running or self.waiting)

    def get_request(self, request_id: str) -> Request | None:
        """The unfinished request with this id; None once it finished or was aborted."""
        return self._requests.get(request_id)

    # ------------------------------------------------------------------ request lifecycle

    def add_request(self, request: Request) -> None:
        """Queue a new request; raises RequestError (never admitting it) when it can never run."""
        self._validate(request)
        request.status = RequestStatus.WAITING
        self._requests[request.request_id] = request
        self._arrival_order[request.request_id] = self._next_count()
        self._push_waiting(request)

    def abort_requests(self, request_ids: Iterable[str]) -> None:
        """Finish these requests as aborted and free their blocks now; unknown ids are ignored."""
        for request_id in request_ids:
            self.finish_request(request_id, RequestStatus.FINISHED_ABORTED)

    def finish_request(self, request_id: str, status: RequestStatus) -> None:
        """Finish a request with a finished `status` (stop, length, abort) and free its blocks."""
        status = RequestStatus(status)
        if not status.is_finished():
            raise ValueError(f"finish_request needs a finished status, got {status.name}")
        request = self._requests.pop(request_id, None)
        if request is None:
            return
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self.kv.free(request)
        request.status = status
        self._arrival_order.pop(request_id, None)
        self._admission_order.pop(request_id, None)

    # ------------------------------------------------------------------ the step

    def schedule(self) -> SchedulerOutput:
        """Plan one step: serve the running requests, then admit waiting ones while budget remains."""
        step = _Step(budget=self.max_num_batched_tokens)
        self._schedule_running(step)
        if not step.preempted:
            self._schedule_waiting(step)
        num_tokens = self.max_num_batched_tokens - step.budget
        return SchedulerOutput(list(step.scheduled.values()), num_tokens, step.preempted, finished_ids=step.finished)

    def update_from_output(self, output: SchedulerOutput, sampled: dict[str, int]) -> None:
        """Record a finished step: advance computed tokens and append the sampled ones.

        `sampled` maps the id of every scheduled request with samples=True to its new token.
        Requests finished or aborted since `schedule()` are skipped.
        """
        for request in self.mark_scheduled(output):
            request.resolve_pending_token(sampled[request.request_id])

    def mark_scheduled(self, output: SchedulerOutput) -> list[Request]:
        """A step was launched: advance computed tokens and give each sampling request a pending token.

        Returns the requests that got one, in `output` order; requests finished or aborted since
        `schedule()` are skipped. Each pending token is resolved (Request.resolve_pending_token)
        once its value is read back. Until then the scheduler counts it: the next `schedule()` can
        plan its computation (async scheduling), but the KV manager never hashes a block holding it.
        """
        running, live, marked = RequestStatus.RUNNING, self._requests, []
        for item in output.scheduled:
            request = item.request
            if request.status is not running or live.get(request.request_id) is not request:
                continue
            request.num_computed_tokens += item.num_new_tokens
            if item.samples:
                request.add_pending_token()
                marked.append(request)
        return marked

    def _schedule_running(self, step: _Step) -> None:
        running = RequestStatus.RUNNING
        for request in list(self.running):
            if step.budget <= 0:
                break
            if request.status is not running:
                continue  # preempted earlier in this step
            num_new = min(request.num_tokens - request.num_computed_tokens, step.budget)
            if num_new <= 0 or self._ends_at_pending(request) or self._finish_if_outgrown(request, step):
                continue
            block_ids = self._allocate_or_preempt(request, num_new, step)
            if block_ids is not None:
                self._plan(step, request, num_new, block_ids)

    def _schedule_waiting(self, step: _Step) -> None:
        while self.waiting and step.budget > 0 and len(self.running) < self.max_num_seqs:
            request = self.waiting[0]
            if request.num_pending_tokens:
                break  # preempted while its last token was on the device: admitted once it is known
            if self._finish_if_outgrown(request, step):
                continue
            prefix = self.kv.find_prefix(request)
            num_new = min(request.num_tokens - prefix.num_tokens, step.budget)
            block_ids = self.kv.allocate_slots(request, num_new, prefix)
            if block_ids is None:
                break
            self.waiting.pop(0)
            self._admit(request, prefix)
            self._plan(step, request, num_new, block_ids)

    def _plan(self, step: _Step, request: Request, num_new: int, block_ids: list[int]) -> None:
        start = request.num_computed_tokens
        samples = start + num_new == request.num_tokens
        step.scheduled[request.request_id] = ScheduledRequest(request, num_new, start, block_ids, samples)
        step.budget -= num_new

    # ------------------------------------------------------------------ admission and preemption

    def _allocate_or_preempt(self, request: Request, num_new: int, step: _Step) -> list[int] | None:
        """Allocate the request's slots, preempting victims until they fit; None if it lost its place."""
        while True:
            block_ids = self.kv.allocate_slots(request, num_new)
            if block_ids is not None:
                return block_ids
            victim = max(self.running, key=self._victim_key)  # alone, the request always fits
            self._preempt(victim, step)
            if victim is request:
                return None

    def _victim_key(self, request: Request) -> tuple[int, int]:
        return request.priority, self._admission_order[request.request_id]

    def _preempt(self, victim: Request, step: _Step) -> None:
        self.running.remove(victim)
        planned = step.scheduled.pop(victim.request_id, None)
        if planned is not None:
            step.budget += planned.num_new_tokens
        self.kv.free(victim)
        victim.status = RequestStatus.PREEMPTED
        victim.num_computed_tokens = 0
        victim.num_preemptions += 1
        self._admission_order.pop(victim.request_id, None)
        self._push_waiting(victim)
        step.preempted.append(victim.request_id)

    def _ends_at_pending(self, request: Request) -> bool:
        """Its pending token is its last (max_tokens or max_model_len): the engine ends it once known."""
        if not request.num_pending_tokens:
            return False
        num_out = request.num_output_tokens + request.num_pending_tokens
        return num_out >= request.max_tokens or request.num_tokens >= self.max_model_len

    def _finish_if_outgrown(self, request: Request, step: _Step) -> bool:
        """End, as a length finish, a request whose tokens alone need more blocks than the pool has.

        Only possible when max_model_len exceeds the pool: the request could never take its next step.
        """
        if request.num_tokens <= self._pool_tokens:
            return False
        self.finish_request(request.request_id, RequestStatus.FINISHED_LENGTH)
        step.finished.append(request.request_id)
        return True

    def _admit(self, request: Request, prefix: "PrefixHit") -> None:
        request.status = RequestStatus.RUNNING
        request.num_computed_tokens = prefix.num_tokens
        if request.num_preemptions == 0:
            request.num_cached_tokens = prefix.num_tokens
        self._admission_order[request.request_id] = self._next_count()
        self.running.append(request)

    def _push_waiting(self, request: Request) -> None:
        bisect.insort(self.waiting, request, key=self._waiting_key)

    def _waiting_key(self, request: Request) -> tuple[int, int, float, int]:
        """Priority first; within a priority, preempted requests go to the front, then arrival order."""
        fresh = 0 if request.status is RequestStatus.PREEMPTED else 1
        return request.priority, fresh, request.arrival_time, self._arrival_order[request.request_id]

    def _next_count(self) -> int:
        self._counter += 1
        return self._counter

    # ------------------------------------------------------------------ validation

    def _validate(self, request: Request) -> None:
        name = f"request {request.request_id!r}"
        if request.request_id in self._requests:
            raise RequestError(f"{name}: that request id is already in use; give each request a unique id")
        num_prompt = request.num_prompt_tokens
        if num_prompt == 0:
            raise RequestError(f"{name}: the prompt is empty; give at least one prompt token")
        if request.max_tokens < 1:
            raise RequestError(f"{name}: max_tokens must be at least 1, got {request.max_tokens}")
        if num_prompt + 1 > self.max_model_len:
            raise RequestError(
                f"{name}: the prompt is {num_prompt} tokens, but max_model_len is {self.max_model_len} "
                f"and at least 1 token must be generated; shorten the prompt to at most "
                f"{self.max_model_len - 1} tokens or raise --max-model-len"
            )
        capacity = self.kv.num_blocks * self.kv.block_size
        if num_prompt + 1 > capacity:
            raise RequestError(
                f"{name}: the prompt is {num_prompt} tokens, but the whole KV cache holds only "
                f"{capacity} tokens ({self.kv.num_blocks} blocks of {self.kv.block_size}); shorten the "
                f"prompt to at most {capacity - 1} tokens or give the KV cache more memory (--kv-cache-memory)"
            )
