"""KVBlock: the bookkeeping record of one fixed-size block of the KV pool."""

from __future__ import annotations


class KVBlock:
    """One block of the pool: who holds it, what it caches, and its links in the free queue."""

    __slots__ = ("block_id", "ref_cnt", "block_hash", "prev", "next")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id  # index into the device pool (dim N of each layer's cache)
        self.ref_cnt = 0  # requests whose block table holds this block; 0 means free
        self.block_hash: bytes | None = None  # set while the block is registered in the prefix cache
        self.prev: KVBlock | None = None  # free-queue links; both None while the block is in use
        self.next: KVBlock | None = None

    def __repr__(self) -> str:
        cached = "cached" if self.block_hash is not None else "plain"
        return f"KVBlock({self.block_id}, ref={self.ref_cnt}, {cached})"
