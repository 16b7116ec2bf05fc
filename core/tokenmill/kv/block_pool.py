"""BlockPool: every KV block's reference count, the free queue and the prefix-cache hash map."""

from __future__ import annotations

from collections.abc import Iterable

from tokenmill.kv.free_block_queue import FreeBlockQueue
from tokenmill.kv.kv_block import KVBlock


class BlockPool:
    """Hands out, shares, frees and evicts the blocks of a fixed-size pool; no notion of requests.

    Invariants: a block is in the free queue exactly when its ref_cnt is 0; a block with a hash is
    the one entry of the hash map under that hash. A free block keeps its hash (and can be hit
    again) until it is handed out as a new block, which is the only moment eviction happens.
    """

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"a KV pool needs at least one block, got {num_blocks}")
        self.blocks = [KVBlock(i) for i in range(num_blocks)]
        self._free = FreeBlockQueue(self.blocks)
        self._cached: dict[bytes, KVBlock] = {}
        self.num_evictions = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        """Blocks with no holder, cached or not: all of them can be handed out."""
        return len(self._free)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks registered in the prefix cache, in use or free."""
        return len(self._cached)

    def free_blocks(self) -> list[KVBlock]:
        """The free queue, front (next handed out) first; for tests and debugging."""
        return list(self._free)

    def lookup(self, block_hash: bytes) -> KVBlock | None:
        """The cached block holding this content, whether in use or free."""
        return self._cached.get(block_hash)

    def allocate(self, num_blocks: int) -> list[KVBlock]:
        """Take `num_blocks` blocks off the front of the free queue, evicting any cached content."""
        if num_blocks > len(self._free):
            raise ValueError(f"asked for {num_blocks} KV blocks but only {len(self._free)} are free")
        taken = []
        for _ in range(num_blocks):
            block = self._free.popleft()
            if block.block_hash is not None:
                self.uncache(block)
                self.num_evictions += 1
            block.ref_cnt = 1
            taken.append(block)
        return taken

    def acquire(self, blocks: Iterable[KVBlock]) -> None:
        """Add one holder to each block (a prefix hit); a free block leaves the free queue."""
        for block in blocks:
            if block.ref_cnt == 0:
                self._free.remove(block)
            block.ref_cnt += 1

    def release(self, blocks: Iterable[KVBlock]) -> None:
        """Drop one holder from each block, in the given order; blocks left unheld become free.

        Cached blocks join the back of the queue in that order (so the first one released is the
        first evicted); blocks without content join the front.
        """
        for block in blocks:
            if block.ref_cnt <= 0:
                raise ValueError(f"KV block {block.block_id} released more often than it was taken")
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                if block.block_hash is None:
                    self._free.appendleft(block)
                else:
                    self._free.append(block)

    def cache(self, block: KVBlock, block_hash: bytes) -> bool:
        """Register a full block's content; False (and no change) when that content is cached already."""
        if block.block_hash is not None or block_hash in self._cached:
            return False
        block.block_hash = block_hash
        self._cached[block_hash] = block
        return True

    def uncache(self, block: KVBlock) -> None:
        """Forget a block's content, so no later request can hit it."""
        if block.block_hash is not None:
            del self._cached[block.block_hash]
            block.block_hash = None

    def reset_prefix_cache(self) -> bool:
        """Forget every cached block; refused (False) while any block is in use."""
        if len(self._free) != len(self.blocks):
            return False
        for block in list(self._cached.values()):
            self.uncache(block)
        return True
