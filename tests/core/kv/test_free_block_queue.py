"""FreeBlockQueue: order, O(1) removal from the middle, and refusal of double insertion."""

import pytest

from tokenmill.kv.free_block_queue import FreeBlockQueue
from tokenmill.kv.kv_block import KVBlock


def ids(queue: FreeBlockQueue) -> list[int]:
    return [block.block_id for block in queue]


def test_order_popleft_append_appendleft():
    blocks = [KVBlock(i) for i in range(4)]
    queue = FreeBlockQueue(blocks)
    assert ids(queue) == [0, 1, 2, 3] and len(queue) == 4
    first = queue.popleft()
    assert first.block_id == 0 and first.prev is None and first.next is None
    queue.append(first)
    assert ids(queue) == [1, 2, 3, 0]
    second = queue.popleft()
    queue.appendleft(second)
    assert ids(queue) == [1, 2, 3, 0]


def test_remove_from_middle_and_ends():
    blocks = [KVBlock(i) for i in range(5)]
    queue = FreeBlockQueue(blocks)
    queue.remove(blocks[2])
    queue.remove(blocks[0])
    queue.remove(blocks[4])
    assert ids(queue) == [1, 3] and len(queue) == 2
    with pytest.raises(ValueError, match="not in the free queue"):
        queue.remove(blocks[2])


def test_double_insert_and_empty_pop_refused():
    block = KVBlock(7)
    queue = FreeBlockQueue([block])
    with pytest.raises(ValueError, match="already in the free queue"):
        queue.append(block)
    queue.popleft()
    with pytest.raises(IndexError):
        queue.popleft()
