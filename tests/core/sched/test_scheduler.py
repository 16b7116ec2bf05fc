"""Scheduler behaviour, driven through a simulated engine loop (see conftest.py)."""

import pytest

from tokenmill.errors import RequestError
from tokenmill.kv import KVCacheManager
from tokenmill.sched import Request, RequestStatus, Scheduler


def prompt(seed: int, length: int) -> list[int]:
    return [(seed * 31 + i * 7) % 89 + 1 for i in range(length)]


def test_token_budget_and_max_num_seqs_respected(sim_engine, reference):
    engine = sim_engine.build(num_blocks=200, budget=16, max_num_seqs=3)
    for i in range(6):
        engine.add(f"r{i}", prompt(i, 5 + 3 * i), 6)
    outputs = engine.run()  # check_plan asserts budget and max_num_seqs at every step
    assert max(step.num_batched_tokens for step in engine.steps) == 16
    assert max(len(step.scheduled) for step in engine.steps) == 3
    for i in range(6):
        assert outputs[f"r{i}"] == reference(prompt(i, 5 + 3 * i), 6, 4096, False)


def test_chunked_prefill_splits_and_completes(sim_engine, reference):
    engine = sim_engine.build(num_blocks=64, budget=32)
    engine.add("long", prompt(1, 100), 5)
    first = [engine.step() for _ in range(4)]
    assert [s.scheduled[0].num_new_tokens for s in first] == [32, 32, 32, 4]
    assert [s.scheduled[0].start for s in first] == [0, 32, 64, 96]
    assert [s.scheduled[0].samples for s in first] == [False, False, False, True]
    chunked = engine.run()["long"]
    big = sim_engine.build(num_blocks=64, budget=1000)
    big.add("long", prompt(1, 100), 5)
    assert chunked == big.run()["long"] == reference(prompt(1, 100), 5, 4096, False)
    assert len(big.steps) == 5 and len(engine.steps) == 8


def test_decodes_share_steps_with_prefill_chunks(sim_engine, reference):
    engine = sim_engine.build(num_blocks=64, budget=16)
    engine.add("short", prompt(2, 6), 12)
    engine.step()
    engine.add("long", prompt(3, 40), 3)
    mixed = engine.step()
    shares = {item.request.request_id: (item.num_new_tokens, item.samples) for item in mixed.scheduled}
    assert shares == {"short": (1, True), "long": (15, False)}
    outputs = engine.run()
    assert outputs["short"] == reference(prompt(2, 6), 12, 4096, False)
    assert outputs["long"] == reference(prompt(3, 40), 3, 4096, False)


def test_preemption_under_tiny_pool_loses_nothing(sim_engine, reference):
    prompts = {f"r{i}": prompt(i, 4 + 5 * i) for i in range(8)}
    engine = sim_engine.build(num_blocks=12, block_size=4, budget=24, max_num_seqs=8)
    for rid, tokens in prompts.items():
        engine.add(rid, tokens, 10)
    outputs = engine.run()
    assert sum(r.num_preemptions for r in engine.requests.values()) > 0, "the pool was meant to force preemption"
    assert any(step.preempted_ids for step in engine.steps)
    assert sorted(outputs) == sorted(prompts)
    for rid, tokens in prompts.items():
        assert outputs[rid] == reference(tokens, 10, 4096, False), rid
        assert engine.statuses[rid] is RequestStatus.FINISHED_LENGTH
    kv = engine.scheduler.kv
    assert kv.num_used_blocks == 0 and kv.num_free_blocks == kv.num_blocks


def test_preempts_most_recently_admitted(sim_engine):
    engine = sim_engine.build(num_blocks=6, block_size=4, budget=64)
    engine.add("old", prompt(1, 7), 20)
    engine.step()
    engine.add("new", prompt(2, 7), 20)
    engine.step()
    step = engine.step()
    while not step.preempted_ids:
        step = engine.step()
    assert step.preempted_ids == ["new"]
    assert [item.request.request_id for item in step.scheduled] == ["old"], "no admission in a preempting step"
    assert engine.scheduler.get_request("new").status is RequestStatus.PREEMPTED
    assert engine.scheduler.waiting[0].request_id == "new"
    assert engine.scheduler.get_request("new").num_computed_tokens == 0


def test_preempts_lowest_priority_first(sim_engine):
    engine = sim_engine.build(num_blocks=6, block_size=4, budget=64)
    engine.add("background", prompt(1, 7), 20, priority=5)
    engine.step()
    engine.add("urgent", prompt(2, 7), 20, priority=0)
    engine.step()
    victims = []
    while not victims:
        victims = engine.step().preempted_ids
    assert victims == ["background"]


def test_prefix_hits_counted_and_fewer_tokens_computed(sim_engine, reference):
    system = prompt(9, 40)
    batches = [[system + prompt(i, 5) for i in range(4)], [system + prompt(i + 10, 7) for i in range(4)]]

    def serve(caching: bool):
        engine = sim_engine.build(num_blocks=128, block_size=4, budget=64, prefix_caching=caching)
        for b, batch in enumerate(batches):
            for i, tokens in enumerate(batch):
                engine.add(f"b{b}r{i}", tokens, 6)
            engine.run()
        return engine

    cached, plain = serve(True), serve(False)
    assert cached.outputs == plain.outputs
    assert cached.scheduler.kv.prefix_hits >= 7 * 40  # all but the first request hit the system prompt
    assert cached.scheduler.kv.prefix_queries > cached.scheduler.kv.prefix_hits
    assert plain.scheduler.kv.prefix_hits == 0
    assert cached.num_computed < plain.num_computed - 200
    assert all(cached.requests[f"b1r{i}"].num_cached_tokens == 40 for i in range(4))
    for b, batch in enumerate(batches):
        for i, tokens in enumerate(batch):
            assert cached.outputs[f"b{b}r{i}"] == reference(tokens, 6, 4096, False)


def test_prompt_continuing_generated_text_hits_generated_blocks(sim_engine, reference):
    engine = sim_engine.build(num_blocks=64, block_size=4)
    first = engine.add("first", prompt(4, 6), 12)
    engine.run()
    follow = first.prompt_token_ids + first.output_token_ids[:10] + [3]
    second = engine.add("second", follow, 2)
    engine.run()
    assert second.num_cached_tokens == 16  # 4 full blocks, 2 of them filled by generated tokens
    assert engine.outputs["second"] == reference(follow, 2, 4096, False)


def test_abort_frees_blocks_at_once(sim_engine):
    engine = sim_engine.build(num_blocks=32, block_size=4)
    engine.add("a", prompt(1, 10), 50)
    engine.add("b", prompt(2, 10), 50)
    engine.step()
    kv = engine.scheduler.kv
    held_by_a = set(kv.block_table("a"))
    engine.scheduler.abort_requests(["a", "unknown"])
    a = engine.requests["a"]
    assert a.status is RequestStatus.FINISHED_ABORTED and engine.scheduler.get_request("a") is None
    assert kv.block_table("a") == [] and kv.num_used_blocks == len(kv.block_table("b"))
    assert all(kv.pool.blocks[i].ref_cnt == 0 for i in held_by_a)
    assert all(item.request.request_id != "a" for item in engine.step().scheduled)
    engine.scheduler.abort_requests(["a", "b"])
    assert not engine.scheduler.has_unfinished_requests() and kv.num_used_blocks == 0


def test_abort_between_schedule_and_update(sim_engine, reference):
    engine = sim_engine.build(num_blocks=32, block_size=4)
    engine.add("a", prompt(1, 9), 3)
    engine.add("b", prompt(2, 9), 3)
    out = engine.scheduler.schedule()
    engine.scheduler.abort_requests(["a"])
    kv = engine.scheduler.kv
    assert kv.find_prefix(Request("probe", prompt(1, 9), 1)).num_tokens == 0, "unwritten KV must not be hittable"
    engine.scheduler.update_from_output(out, {"b": 5})
    assert engine.requests["a"].num_computed_tokens == 0 and engine.requests["b"].output_token_ids == [5]


def test_abort_waiting_request(sim_engine):
    engine = sim_engine.build(num_blocks=32, max_num_seqs=1)
    engine.add("a", prompt(1, 5), 5)
    engine.add("b", prompt(2, 5), 5)
    engine.step()
    engine.scheduler.abort_requests(["b"])
    assert engine.scheduler.num_waiting == 0 and engine.scheduler.num_running == 1


def test_bad_prompts_rejected_with_clear_messages():
    kv = KVCacheManager(4, 4)
    sched = Scheduler(kv, max_num_batched_tokens=64, max_num_seqs=4, max_model_len=12)
    with pytest.raises(RequestError, match="prompt is empty"):
        sched.add_request(Request("e", [], 4))
    with pytest.raises(RequestError, match=r"prompt is 12 tokens, but max_model_len is 12.*at most 11 tokens"):
        sched.add_request(Request("long", list(range(12)), 4))
    wide = Scheduler(kv, max_num_batched_tokens=64, max_num_seqs=4, max_model_len=1000)
    pool_message = r"prompt is 16 tokens, but the whole KV cache holds only 16 tokens \(4 blocks of 4\)"
    with pytest.raises(RequestError, match=pool_message):
        wide.add_request(Request("huge", list(range(16)), 4))
    with pytest.raises(RequestError, match="max_tokens must be at least 1"):
        sched.add_request(Request("zero", [1], 0))
    sched.add_request(Request("ok", [1, 2], 4))
    with pytest.raises(RequestError, match="already in use"):
        sched.add_request(Request("ok", [1, 2], 4))
    assert sched.num_waiting == 1 and wide.num_waiting == 0
    assert sched.get_request("e") is None and wide.get_request("huge") is None


def test_request_outgrowing_the_whole_pool_finishes_by_length(sim_engine, reference):
    engine = sim_engine.build(num_blocks=3, block_size=4, max_model_len=100)
    engine.add("grow", prompt(1, 5), 50)
    engine.add("other", prompt(2, 3), 2)
    outputs = engine.run()
    assert engine.statuses["grow"] is RequestStatus.FINISHED_LENGTH
    assert outputs["grow"] == reference(prompt(1, 5), 50, 13, False)  # 12 tokens fit; the 13th is never computed
    assert outputs["other"] == reference(prompt(2, 3), 2, 4096, False)
    assert any("grow" in step.finished_ids for step in engine.steps)


def test_priority_then_arrival_order(sim_engine):
    engine = sim_engine.build(num_blocks=64, max_num_seqs=1)
    for rid, priority in (("low1", 3), ("high1", 0), ("low2", 3), ("high2", 0), ("mid", 1)):
        engine.add(rid, prompt(len(rid), 4), 2, priority=priority)
    order = []
    while engine.scheduler.has_unfinished_requests():
        for item in engine.step().scheduled:
            if item.request.request_id not in order:
                order.append(item.request.request_id)
    assert order == ["high1", "high2", "mid", "low1", "low2"]


def test_eos_finishes_early_and_frees(sim_engine, reference):
    engine = sim_engine.build(num_blocks=200, stop_at_eos=True)
    for i in range(30):
        engine.add(f"r{i}", prompt(i, 3 + i % 7), 40)
    outputs = engine.run()
    for i in range(30):
        assert outputs[f"r{i}"] == reference(prompt(i, 3 + i % 7), 40, 4096, True)
    assert any(engine.statuses[r] is RequestStatus.FINISHED_STOPPED for r in outputs)
    assert engine.scheduler.kv.num_used_blocks == 0
