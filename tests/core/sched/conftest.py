"""A simulated engine loop that drives the real Scheduler and KVCacheManager, and checks the KV.

The "model" is exact bookkeeping: for each scheduled token the runner writes, into the slot the
block table gives, a fingerprint of the token history up to and including that position (what a
real KV entry depends on). Before sampling it reads the request's whole history back through its
block table and asserts every fingerprint matches, so a wrong block table, a bad prefix hit or an
overwritten shared block fails at once. The "sampler" is a pure function of the last fingerprint,
so the expected output of every request can be computed alone, without any scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tokenmill.kv import KVCacheManager
from tokenmill.sched import Request, RequestStatus, Scheduler, SchedulerOutput

VOCAB = 97
EOS = 0


def fingerprint(previous: int, token: int) -> int:
    return hash((previous, token))


def fingerprints(tokens: list[int]) -> list[int]:
    out, previous = [], 0
    for token in tokens:
        previous = fingerprint(previous, token)
        out.append(previous)
    return out


def next_token(last_fingerprint: int) -> int:
    return (last_fingerprint * 2654435761 >> 11) % VOCAB


def reference_output(prompt: list[int], max_tokens: int, max_model_len: int, stop_at_eos: bool) -> list[int]:
    """What a request must generate, computed alone."""
    tokens = list(prompt)
    out: list[int] = []
    while len(out) < max_tokens and len(tokens) < max_model_len:
        token = next_token(fingerprints(tokens)[-1])
        out.append(token)
        tokens.append(token)
        if stop_at_eos and token == EOS:
            break
    return out


@dataclass
class SimEngine:
    """schedule -> write KV -> read KV back and sample -> update -> finish on eos/length."""

    scheduler: Scheduler
    stop_at_eos: bool = False
    outputs: dict[str, list[int]] = field(default_factory=dict)
    statuses: dict[str, RequestStatus] = field(default_factory=dict)
    steps: list[SchedulerOutput] = field(default_factory=list)
    num_computed: int = 0  # tokens run through the "model"

    def __post_init__(self) -> None:
        kv = self.scheduler.kv
        self.slots: list[int | None] = [None] * (kv.num_blocks * kv.block_size)
        self.requests: dict[str, Request] = {}

    @classmethod
    def build(cls, num_blocks: int, block_size: int = 4, *, budget: int = 64, max_num_seqs: int = 16,
              max_model_len: int = 4096, prefix_caching: bool = True, stop_at_eos: bool = False) -> "SimEngine":
        kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=prefix_caching)
        sched = Scheduler(kv, max_num_batched_tokens=budget, max_num_seqs=max_num_seqs, max_model_len=max_model_len)
        return cls(sched, stop_at_eos=stop_at_eos)

    def add(self, request_id: str, prompt: list[int], max_tokens: int, priority: int = 0) -> Request:
        request = Request(request_id, prompt, max_tokens, priority=priority)
        self.scheduler.add_request(request)
        self.requests[request_id] = request
        return request

    def step(self) -> SchedulerOutput:
        out = self.scheduler.schedule()
        self.check_plan(out)
        self.steps.append(out)
        for rid in out.finished_ids:
            self._record(self.requests[rid])
        for item in out.scheduled:  # every write of the step lands before any read, as in one forward
            self._write(item.request, item.start, item.num_new_tokens, item.block_ids)
        sampled = {item.request.request_id: self._sample(item.request, item.start + item.num_new_tokens, item.block_ids)
                   for item in out.scheduled if item.samples}
        self.scheduler.update_from_output(out, sampled)
        for rid in sampled:
            self._maybe_finish(self.requests[rid])
        return out

    def run(self, max_steps: int = 10_000) -> dict[str, list[int]]:
        for _ in range(max_steps):
            if not self.scheduler.has_unfinished_requests():
                return self.outputs
            self.step()
        raise AssertionError(f"requests still unfinished after {max_steps} steps")

    def check_plan(self, out: SchedulerOutput) -> None:
        sched = self.scheduler
        ids = [item.request.request_id for item in out.scheduled]
        assert len(ids) == len(set(ids)), "a request scheduled twice in one step"
        assert out.num_batched_tokens == sum(item.num_new_tokens for item in out.scheduled)
        assert out.num_batched_tokens <= sched.max_num_batched_tokens
        assert len(out.scheduled) <= sched.max_num_seqs and sched.num_running <= sched.max_num_seqs
        for item in out.scheduled:
            request = item.request
            assert request.status is RequestStatus.RUNNING and item.num_new_tokens >= 1
            assert item.start == request.num_computed_tokens
            assert item.start + item.num_new_tokens <= request.num_tokens
            assert item.samples == (item.start + item.num_new_tokens == request.num_tokens)
            assert item.block_ids == sched.kv.block_table(request.request_id)
            assert len(item.block_ids) * sched.kv.block_size >= item.start + item.num_new_tokens

    def _slot(self, block_ids: list[int], position: int) -> int:
        size = self.scheduler.kv.block_size
        return block_ids[position // size] * size + position % size

    def _write(self, request: Request, start: int, count: int, block_ids: list[int]) -> None:
        prints = fingerprints(request.all_token_ids[: start + count])
        for position in range(start, start + count):
            self.slots[self._slot(block_ids, position)] = prints[position]
        self.num_computed += count

    def _sample(self, request: Request, end: int, block_ids: list[int]) -> int:
        stored = [self.slots[self._slot(block_ids, p)] for p in range(end)]
        assert stored == fingerprints(request.all_token_ids[:end]), f"KV of {request.request_id} is corrupt"
        return next_token(stored[-1])

    def _maybe_finish(self, request: Request) -> None:
        status = None
        if self.stop_at_eos and request.output_token_ids[-1] == EOS:
            status = RequestStatus.FINISHED_STOPPED
        elif request.num_output_tokens >= request.max_tokens or request.num_tokens >= self.scheduler.max_model_len:
            status = RequestStatus.FINISHED_LENGTH
        if status is not None:
            self.scheduler.finish_request(request.request_id, status)
            self._record(request)

    def _record(self, request: Request) -> None:
        assert request.request_id not in self.outputs, f"{request.request_id} finished twice"
        assert request.status.is_finished()
        self.outputs[request.request_id] = list(request.output_token_ids)
        self.statuses[request.request_id] = request.status


@pytest.fixture(scope="session")
def sim_engine() -> type[SimEngine]:
    return SimEngine


@pytest.fixture(scope="session")
def reference() -> object:
    return reference_output
