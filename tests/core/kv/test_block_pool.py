"""BlockPool: reference counts, eviction only when a block is needed, LRU among cached blocks."""

import pytest

from tokenmill.kv.block_pool import BlockPool


def free_ids(pool: BlockPool) -> list[int]:
    return [block.block_id for block in pool.free_blocks()]


def test_allocate_and_release_counts():
    pool = BlockPool(4)
    taken = pool.allocate(3)
    assert [b.ref_cnt for b in taken] == [1, 1, 1] and pool.num_free_blocks == 1
    with pytest.raises(ValueError, match="only 1 are free"):
        pool.allocate(2)
    pool.release(taken)
    assert pool.num_free_blocks == 4
    with pytest.raises(ValueError, match="released more often"):
        pool.release([taken[0]])


def test_cached_block_survives_free_and_is_evicted_last():
    pool = BlockPool(3)
    a, b, c = pool.allocate(3)
    assert pool.cache(a, b"A")
    pool.release([a, b, c])
    # plain blocks go to the front, cached ones to the back: a new block never costs a cached one
    assert free_ids(pool)[-1] == a.block_id
    first_two = pool.allocate(2)
    assert a not in first_two and pool.lookup(b"A") is a and pool.num_cached_blocks == 1
    (third,) = pool.allocate(1)
    assert third is a and pool.lookup(b"A") is None and a.block_hash is None
    assert pool.num_evictions == 1


def test_lru_order_among_cached_blocks():
    pool = BlockPool(3)
    blocks = pool.allocate(3)
    for block, key in zip(blocks, (b"0", b"1", b"2")):
        pool.cache(block, key)
    pool.release([blocks[2], blocks[0], blocks[1]])  # freed in this order
    assert [b.block_id for b in pool.allocate(3)] == [2, 0, 1]


def test_acquire_revives_free_cached_block():
    pool = BlockPool(2)
    (block,) = pool.allocate(1)
    pool.cache(block, b"x")
    pool.release([block])
    pool.acquire([pool.lookup(b"x")])
    assert block.ref_cnt == 1 and pool.num_free_blocks == 1 and block not in pool.free_blocks()
    pool.acquire([block])
    assert block.ref_cnt == 2
    pool.release([block, block])
    assert pool.num_free_blocks == 2


def test_duplicate_content_is_not_registered_twice():
    pool = BlockPool(2)
    a, b = pool.allocate(2)
    assert pool.cache(a, b"same") and not pool.cache(b, b"same")
    assert b.block_hash is None and pool.lookup(b"same") is a


def test_reset_prefix_cache_only_when_idle():
    pool = BlockPool(2)
    (a,) = pool.allocate(1)
    pool.cache(a, b"k")
    assert not pool.reset_prefix_cache()
    pool.release([a])
    assert pool.reset_prefix_cache() and pool.num_cached_blocks == 0 and pool.num_free_blocks == 2
