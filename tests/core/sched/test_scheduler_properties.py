"""Property test: random workloads, pools, budgets and aborts; nothing is lost, duplicated or corrupted."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenmill.errors import RequestError
from tokenmill.sched import RequestStatus

STEMS = [[], [5, 6, 7, 8, 9, 10, 11, 12], [5, 6, 7, 8, 40, 41]]

request_st = st.tuples(
    st.sampled_from(STEMS),
    st.lists(st.integers(1, 90), max_size=12),  # prompt tail
    st.integers(1, 12),  # max_tokens
    st.integers(0, 2),  # priority
    st.integers(0, 6),  # step at which it arrives
    st.one_of(st.none(), st.integers(0, 12)),  # step at which it is aborted
)
config_st = st.fixed_dictionaries({
    "num_blocks": st.integers(2, 24),
    "block_size": st.sampled_from([1, 2, 4]),
    "budget": st.integers(1, 40),
    "max_num_seqs": st.integers(1, 6),
    "max_model_len": st.sampled_from([12, 30, 4096]),
    "prefix_caching": st.booleans(),
})


def check_blocks(scheduler):
    kv = scheduler.kv
    owners = [0] * kv.num_blocks
    for request in scheduler.running:
        for block_id in kv.block_table(request.request_id):
            owners[block_id] += 1
    for request in scheduler.waiting:
        assert kv.block_table(request.request_id) == [], "a waiting request holds blocks"
    assert [b.ref_cnt for b in kv.pool.blocks] == owners
    assert kv.num_free_blocks == owners.count(0)


@settings(max_examples=120, deadline=None)
@given(config=config_st, workload=st.lists(request_st, min_size=1, max_size=8))
def test_random_workloads(sim_engine, reference, config, workload):
    engine = sim_engine.build(**config)
    scheduler, capacity = engine.scheduler, config["num_blocks"] * config["block_size"]
    accepted, aborted = {}, set()
    for step in range(3000):
        for index, (stem, tail, max_tokens, priority, arrival, abort_at) in enumerate(workload):
            rid, tokens = f"r{index}", (stem + tail) or [1]
            if arrival == step:
                if len(tokens) + 1 > min(config["max_model_len"], capacity):
                    try:
                        engine.add(rid, tokens, max_tokens, priority)
                    except RequestError:
                        continue
                    raise AssertionError("a prompt that can never run was admitted")
                accepted[rid] = (tokens, max_tokens)
                engine.add(rid, tokens, max_tokens, priority)
            if abort_at == step and rid in accepted and rid not in engine.outputs and rid not in aborted:
                scheduler.abort_requests([rid])
                aborted.add(rid)
        if step > 6 and not scheduler.has_unfinished_requests():
            break
        engine.step()
        check_blocks(scheduler)
    assert not scheduler.has_unfinished_requests(), "the scheduler stopped making progress"
    assert set(engine.outputs) | aborted == set(accepted) and not set(engine.outputs) & aborted
    limit = min(config["max_model_len"], capacity + 1)
    for rid, (tokens, max_tokens) in accepted.items():
        expected = reference(tokens, max_tokens, limit, False)
        if rid in aborted:
            request = engine.requests[rid]
            assert request.status is RequestStatus.FINISHED_ABORTED
            assert request.output_token_ids == expected[: request.num_output_tokens]
        else:
            assert engine.outputs[rid] == expected, rid
    assert scheduler.kv.num_used_blocks == 0 and scheduler.kv.num_free_blocks == scheduler.kv.num_blocks
