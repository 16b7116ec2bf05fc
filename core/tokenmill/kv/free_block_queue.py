"""FreeBlockQueue: the free KV blocks in eviction order, as an intrusive doubly linked list."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tokenmill.kv.kv_block import KVBlock


class FreeBlockQueue:
    """Free blocks, front first out: the front is handed out (and evicted) next.

    Why not a deque: a prefix-cache hit revives a *free* cached block from the middle of the queue,
    and a linked list through the blocks' own prev/next fields removes it in O(1).
    Order: blocks that hold no cached content go to the front (handing them out loses nothing);
    cached blocks go to the back when freed, so the least recently freed cached block is the one
    evicted first, and only once no contentless free block is left.
    """

    def __init__(self, blocks: Iterable[KVBlock]) -> None:
        self._head = KVBlock(-1)  # sentinels: real blocks always sit between them
        self._tail = KVBlock(-1)
        self._head.next = self._tail
        self._tail.prev = self._head
        self._len = 0
        for block in blocks:
            self.append(block)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[KVBlock]:
        node = self._head.next
        while node is not self._tail:
            yield node
            node = node.next

    def popleft(self) -> KVBlock:
        if not self._len:
            raise IndexError("no free KV block left")
        block = self._head.next
        self.remove(block)
        return block

    def append(self, block: KVBlock) -> None:
        self._link(block, self._tail.prev, self._tail)

    def appendleft(self, block: KVBlock) -> None:
        self._link(block, self._head, self._head.next)

    def remove(self, block: KVBlock) -> None:
        if block.prev is None or block.next is None:
            raise ValueError(f"KV block {block.block_id} is not in the free queue")
        block.prev.next = block.next
        block.next.prev = block.prev
        block.prev = block.next = None
        self._len -= 1

    def _link(self, block: KVBlock, before: KVBlock, after: KVBlock) -> None:
        if block.prev is not None or block.next is not None:
            raise ValueError(f"KV block {block.block_id} is already in the free queue")
        block.prev, block.next = before, after
        before.next = block
        after.prev = block
        self._len += 1
