"""KVCacheManager: block tables, prefix hits, hashing of generated blocks, freeing, counters."""

from tokenmill.kv import KVCacheManager
from tokenmill.sched import Request


def admit(kv: KVCacheManager, request: Request, num_new: int | None = None) -> list[int] | None:
    """Admission as the scheduler does it; computes the whole remaining prompt by default."""
    prefix = kv.find_prefix(request)
    count = request.num_tokens - prefix.num_tokens if num_new is None else num_new
    table = kv.allocate_slots(request, count, prefix)
    if table is not None:
        request.num_computed_tokens = prefix.num_tokens + count
    return table


def test_table_grows_by_whole_blocks():
    kv = KVCacheManager(8, 4)
    request = Request("a", list(range(10)), 8)
    table = admit(kv, request)
    assert len(table) == 3 and kv.num_used_blocks == 3 and kv.block_table("a") == table
    request.append_output_token(50)
    assert kv.allocate_slots(request, 1) == table  # token 10 fits in block 2
    request.num_computed_tokens += 1
    request.append_output_token(51)
    request.append_output_token(52)
    assert len(kv.allocate_slots(request, 2)) == 4  # tokens 11 and 12 need a fourth block
    assert kv.usage == 4 / 8


def test_allocation_failure_changes_nothing():
    kv = KVCacheManager(2, 4)
    request = Request("a", list(range(12)), 4)
    assert kv.find_prefix(request).num_tokens == 0
    assert admit(kv, request) is None
    assert kv.num_free_blocks == 2 and kv.block_table("a") == [] and kv.prefix_queries == 0


def test_prefix_hit_shares_full_blocks_and_leaves_last_token():
    kv = KVCacheManager(16, 4)
    first = Request("a", list(range(12)), 4)
    first_table = admit(kv, first)
    assert kv.num_cached_blocks == 3  # three full prompt blocks, registered on allocation
    second = Request("b", list(range(12)), 4)  # identical prompt: the last block must not be hit
    prefix = kv.find_prefix(second)
    assert prefix.block_ids == tuple(first_table[:2]) and prefix.num_tokens == 8
    table = kv.allocate_slots(second, 4, prefix)
    assert table[:2] == first_table[:2] and table[2] != first_table[2]
    assert [kv.pool.blocks[i].ref_cnt for i in table] == [2, 2, 1]
    assert kv.prefix_queries == 24 and kv.prefix_hits == 8


def test_hit_stops_at_first_differing_block():
    kv = KVCacheManager(16, 4)
    admit(kv, Request("a", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], 4))
    assert kv.find_prefix(Request("b", [1, 2, 3, 4, 0, 6, 7, 8, 9, 10, 11, 12, 13], 4)).num_tokens == 4
    assert kv.find_prefix(Request("c", [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], 4)).num_tokens == 0


def test_freed_blocks_stay_hittable_until_evicted():
    kv = KVCacheManager(4, 4)
    first = Request("a", list(range(9)), 4)
    admit(kv, first)
    kv.free(first)
    assert kv.num_free_blocks == 4 and kv.num_cached_blocks == 2
    again = Request("b", list(range(9)), 4)
    assert admit(kv, again) is not None and again.num_computed_tokens == 9
    assert kv.prefix_hits == 8 and kv.num_used_blocks == 3
    kv.free(again)
    # a 16-token prompt needs all 4 blocks: the cached ones are evicted only now
    filler = Request("c", [99] * 16, 4)
    assert admit(kv, filler) is not None and kv.num_cached_blocks == 4
    assert kv.find_prefix(Request("d", list(range(9)), 4)).num_tokens == 0


def test_blocks_filled_by_generated_tokens_are_hashed():
    kv = KVCacheManager(8, 4)
    request = Request("a", [5, 6, 7], 8)
    admit(kv, request)
    for token in (8, 9, 10):  # decode: token 3 fills block 0, computed in the next step
        request.append_output_token(token)
        kv.allocate_slots(request, 1)
        request.num_computed_tokens += 1
    assert kv.num_cached_blocks == 1
    follower = Request("b", [5, 6, 7, 8, 9], 4)  # a prompt continuing the generated text
    assert kv.find_prefix(follower).num_tokens == 4


def test_uncomputed_registered_blocks_are_dropped_on_free():
    kv = KVCacheManager(8, 4)
    request = Request("a", list(range(9)), 4)
    prefix = kv.find_prefix(request)
    kv.allocate_slots(request, 9, prefix)  # scheduled, then preempted before the step ran
    assert kv.num_cached_blocks == 2
    kv.free(request)  # num_computed_tokens is still 0: nothing was written
    assert kv.num_cached_blocks == 0 and kv.num_free_blocks == 8


def test_prefix_caching_off():
    kv = KVCacheManager(8, 4, enable_prefix_caching=False)
    admit(kv, Request("a", list(range(9)), 4))
    assert kv.num_cached_blocks == 0
    assert kv.find_prefix(Request("b", list(range(9)), 4)).num_tokens == 0
    assert kv.prefix_queries == 0 and kv.prefix_hits == 0


def test_free_twice_and_unknown_are_ignored():
    kv = KVCacheManager(4, 4)
    request = Request("a", [1, 2, 3], 4)
    admit(kv, request)
    kv.free(request)
    kv.free(request)
    kv.free(Request("never", [1], 1))
    assert kv.num_free_blocks == 4 and all(b.ref_cnt == 0 for b in kv.pool.blocks)


def test_eviction_prefers_sequence_tail():
    kv = KVCacheManager(3, 2)
    request = Request("a", [1, 2, 3, 4, 5, 6, 7], 4)
    admit(kv, request, 6)
    kv.free(request)
    table_order = [b.block_id for b in kv.pool.free_blocks()]
    # released last-first: block 2 (tokens 5-6) is evicted first, block 0 (tokens 1-2) last
    assert table_order == [2, 1, 0]
