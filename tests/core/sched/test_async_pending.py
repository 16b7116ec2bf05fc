"""Pending tokens (async scheduling): the scheduler plans step n+1 before step n's tokens are known.

AsyncSim drives the real Scheduler and KVCacheManager the way EngineCore does with async
scheduling: schedule step n, run it with the in-flight step's tokens as the device knows them,
then resolve step n-1's tokens (stop checks), then mark step n's pending tokens. The simulated
KV holds a fingerprint of each token's history and every sample reads it back, so a block table
that points at the wrong KV, or a prefix hit on a block hashed over a token whose value was not
known yet, fails the read.
"""

from __future__ import annotations

from types import SimpleNamespace

from tokenmill.sched import Request, RequestStatus


def prompt(seed: int, length: int) -> list[int]:
    return [(seed * 31 + i * 7) % 89 + 1 for i in range(length)]


class AsyncSim:
    """One step in flight: `launch` runs step n, then step n-1 is resolved, then step n is marked."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self.helpers = SimpleNamespace(**type(sim).step.__globals__)  # this directory's conftest: fingerprints, next_token
        self.inflight: list[tuple[Request, int]] = []  # (request, its pending token's value)
        self.wasted = 0  # rows computed for requests found stopped while their step ran

    def step(self):
        sim, sched = self.sim, self.sim.scheduler
        out = sched.schedule()
        sim.check_plan(out)
        sim.steps.append(out)
        for rid in out.finished_ids:
            sim._record(sim.requests[rid])
        device = {r.request_id: token for r, token in self.inflight}  # the tokens still on the device
        histories = {item.request.request_id: self._history(item.request, device) for item in out.scheduled}
        for item in out.scheduled:
            self._write(histories[item.request.request_id], item.start, item.num_new_tokens, item.block_ids)
        sampled = {item.request.request_id: self._sample(histories[item.request.request_id],
                                                         item.start + item.num_new_tokens, item.block_ids)
                   for item in out.scheduled if item.samples}
        for request, token in self.inflight:  # step n-1's tokens arrive while step n "runs"
            if not request.is_finished():
                request.resolve_pending_token(token)
                sim._maybe_finish(request)
        self.wasted += sum(1 for item in out.scheduled if item.request.is_finished())
        self.inflight = [(r, sampled[r.request_id]) for r in sched.mark_scheduled(out)]
        return out

    def run(self, max_steps: int = 10_000) -> dict[str, list[int]]:
        for _ in range(max_steps):
            if not self.sim.scheduler.has_unfinished_requests() and not self.inflight:
                return self.sim.outputs
            self.step()
        raise AssertionError(f"requests still unfinished after {max_steps} steps")

    @staticmethod
    def _history(request: Request, device: dict[str, int]) -> list[int]:
        if request.num_pending_tokens:
            return request.all_token_ids + [device[request.request_id]]
        return list(request.all_token_ids)

    def _write(self, history: list[int], start: int, count: int, block_ids: list[int]) -> None:
        prints = self.helpers.fingerprints(history[: start + count])
        for position in range(start, start + count):
            self.sim.slots[self.sim._slot(block_ids, position)] = prints[position]

    def _sample(self, history: list[int], end: int, block_ids: list[int]) -> int:
        stored = [self.sim.slots[self.sim._slot(block_ids, p)] for p in range(end)]
        assert stored == self.helpers.fingerprints(history[:end]), "the KV read back does not match the history"
        return self.helpers.next_token(stored[-1])


def test_async_matches_reference_with_chunks_and_preemption(sim_engine, reference):
    prompts = {f"r{i}": prompt(i, 4 + 5 * i) for i in range(8)}
    sim = sim_engine.build(num_blocks=14, block_size=4, budget=12, max_num_seqs=8)
    for rid, tokens in prompts.items():
        sim.add(rid, tokens, 10)
    outputs = AsyncSim(sim).run()
    assert any(step.preempted_ids for step in sim.steps), "the pool was meant to force preemption"
    assert any(not item.samples for step in sim.steps for item in step.scheduled), "meant to chunk prefills"
    for rid, tokens in prompts.items():
        assert outputs[rid] == reference(tokens, 10, 4096, False), rid
    kv = sim.scheduler.kv
    assert kv.num_used_blocks == 0


def test_async_prefix_cache_never_hashes_a_pending_token(sim_engine, reference):
    # Each request's decodes fill blocks whose last token is pending when they are allocated; the
    # second wave shares the first wave's prompts and outputs, so a block hashed over a placeholder
    # would be hit with wrong KV (the read fails) and a block never hashed would not be hit at all.
    sim = sim_engine.build(num_blocks=64, block_size=4, budget=64)
    first = {f"a{i}": prompt(i, 6) for i in range(3)}
    for rid, tokens in first.items():
        sim.add(rid, tokens, 9)
    wave = AsyncSim(sim)
    outputs = wave.run()
    kv = sim.scheduler.kv
    hits_before = kv.prefix_hits
    for i in range(3):
        sim.add(f"b{i}", first[f"a{i}"] + outputs[f"a{i}"][:6], 4)
    outputs = wave.run()
    for i in range(3):
        tokens = first[f"a{i}"] + reference(first[f"a{i}"], 9, 4096, False)[:6]
        assert outputs[f"b{i}"] == reference(tokens, 4, 4096, False)
    assert kv.prefix_hits - hits_before >= 3 * 8, "blocks filled by generated tokens should be hit"


def test_last_pending_token_is_not_scheduled_and_eos_rows_are_discarded(sim_engine):
    sim = sim_engine.build(num_blocks=32, block_size=4, budget=64, stop_at_eos=True)
    sim.add("short", prompt(1, 5), 1)
    wave = AsyncSim(sim)
    wave.step()  # prefill; samples the one token, pending
    second = wave.step()
    assert second.scheduled == [], "its pending token is its last (max_tokens 1): nothing to compute"
    assert sim.statuses["short"] is RequestStatus.FINISHED_LENGTH and wave.wasted == 0
    # A stop only known once the token is read (EOS) leaves one wasted row, never a leaked block.
    sim.add("eos", _prompt_sampling_eos_first(wave.helpers), 5)
    outputs = wave.run()
    assert outputs["eos"] == [0] and wave.wasted == 1
    assert sim.scheduler.kv.num_used_blocks == 0


def _prompt_sampling_eos_first(helpers) -> list[int]:
    for seed in range(10_000):
        tokens = [seed % 89 + 1, seed // 89 % 89 + 1, 5]
        if helpers.next_token(helpers.fingerprints(tokens)[-1]) == helpers.EOS:
            return tokens
    raise AssertionError("no prompt samples EOS first")
