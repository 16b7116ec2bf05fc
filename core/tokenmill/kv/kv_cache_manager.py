"""KVCacheManager: per-request block tables over a BlockPool, with automatic prefix caching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokenmill.kv.block_hash import extend_block_hashes
from tokenmill.kv.block_pool import BlockPool

if TYPE_CHECKING:
    from tokenmill.sched.request import Request


@dataclass(frozen=True, slots=True)
class PrefixHit:
    """The cached full blocks that cover the start of a request, found by `find_prefix`."""

    block_ids: tuple[int, ...] = ()
    num_tokens: int = 0  # tokens those blocks hold: len(block_ids) * block_size


class KVCacheManager:
    """Maps each request to its block table and shares full blocks between equal prefixes.

    Protocol, as the scheduler drives it:
    - admission: `find_prefix(request)`, then `allocate_slots(request, n, prefix)`; on success the
      caller sets request.num_computed_tokens = prefix.num_tokens;
    - every later step: `allocate_slots(request, n)` for the n tokens after num_computed_tokens;
    - `free(request)` when it finishes, is aborted or is preempted.
    A block is registered in the prefix cache as soon as `allocate_slots` has a step compute its
    last token (the step that writes it is the one being scheduled), so prompt blocks and blocks
    filled by generated tokens alike become hittable (one allocation later when its last token is
    still pending on the device, with async scheduling). A block's hash chains over its parent's, so a
    hit on block i implies the whole prefix up to block i matches.

    With `sliding_window` W (every layer of the model attends only its last W keys), each
    allocation also releases the request's blocks that lie wholly before the window of the step's
    first new token (position p reads keys > p - W), as vLLM does; their table entries become
    `null_block`, which the attention backends never read because it is outside every window. A
    released block keeps its prefix-cache entry until evicted, so equal prefixes still hit it.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True,
                 sliding_window: int | None = None, null_block: int = 0) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if sliding_window is not None and sliding_window < 1:
            raise ValueError(f"sliding_window must be positive, got {sliding_window}")
        self.sliding_window = sliding_window
        self.null_block = null_block
        self._num_dropped: dict[str, int] = {}  # request id -> leading table entries released (window)
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._tables: dict[str, list[int]] = {}  # request id -> block ids, in token order
        self._num_registered: dict[str, int] = {}  # request id -> leading table blocks already cached
        self.prefix_queries = 0  # tokens looked up in the prefix cache, at admissions
        self.prefix_hits = 0  # of those, tokens served from cached blocks

    # ------------------------------------------------------------------ counters

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def num_used_blocks(self) -> int:
        return self.pool.num_blocks - self.pool.num_free_blocks

    @property
    def num_cached_blocks(self) -> int:
        return self.pool.num_cached_blocks

    @property
    def usage(self) -> float:
        """Fraction of the pool's blocks held by some request, 0..1."""
        return self.num_used_blocks / self.pool.num_blocks

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0

    def block_table(self, request_id: str) -> list[int]:
        """A copy of the request's block ids in token order; [] for a request holding none."""
        return list(self._tables.get(request_id, ()))

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ------------------------------------------------------------------ verbs

    def find_prefix(self, request: Request) -> PrefixHit:
        """The longest run of cached full blocks at the start of the request's tokens.

        The last token is always left out, so the step still has a position to sample from.
        Looks only; nothing is taken or counted until `allocate_slots` admits the request.
        """
        if not self.enable_prefix_caching:
            return PrefixHit()
        max_blocks = (request.num_tokens - 1) // self.block_size
        self._hash_full_blocks(request, max_blocks)
        hit_ids = []
        for block_hash in request.block_hashes[:max_blocks]:
            block = self.pool.lookup(block_hash)
            if block is None:
                break
            hit_ids.append(block.block_id)
        return PrefixHit(tuple(hit_ids), len(hit_ids) * self.block_size)

    def allocate_slots(
        self, request: Request, num_new_tokens: int, prefix: PrefixHit | None = None
    ) -> list[int] | None:
        """Grow the request's table to hold its computed tokens, `prefix`, and `num_new_tokens` more.

        Pass `prefix` (from `find_prefix`, possibly empty) exactly once, at admission; it is what
        counts the request's prefix queries and hits.

        :returns: a copy of the whole block table, or None (and no change at all) when the free
            blocks cannot cover it; evicting cached free blocks counts as free.
        """
        if prefix is not None:
            return self._admit(request, num_new_tokens, prefix)
        table = self._tables.get(request.request_id)
        if table is None:
            return self._admit(request, num_new_tokens, PrefixHit())
        num_total = request.num_computed_tokens + num_new_tokens
        num_needed = -(-num_total // self.block_size) - len(table)
        if num_needed > 0:  # a decode usually needs none: the fast path is these few lines
            if num_needed > self.pool.num_free_blocks:
                return None
            table.extend(block.block_id for block in self.pool.allocate(num_needed))
        if self.enable_prefix_caching:
            self._register_full_blocks(request, table, num_total)
        if self.sliding_window is not None:
            self._drop_behind_window(request.request_id, table, request.num_computed_tokens)
        return list(table)

    def _drop_behind_window(self, request_id: str, table: list[int], first_position: int) -> None:
        """Release the blocks every key of which is before the window of position `first_position`."""
        num_behind = min(max(0, first_position - self.sliding_window + 1) // self.block_size, len(table))
        done = self._num_dropped.get(request_id, 0)
        if num_behind <= done:
            return
        blocks = self.pool.blocks
        self.pool.release(blocks[table[i]] for i in range(done, num_behind))
        table[done:num_behind] = [self.null_block] * (num_behind - done)
        self._num_dropped[request_id] = num_behind

    def _admit(self, request: Request, num_new_tokens: int, prefix: PrefixHit) -> list[int] | None:
        """First allocation of a request: take the hit blocks, then new ones for the rest."""
        if request.request_id in self._tables or request.num_computed_tokens:
            raise ValueError(f"request {request.request_id!r} already holds KV blocks; a prefix is only for admission")
        blocks = self.pool.blocks
        num_total = prefix.num_tokens + num_new_tokens
        num_needed = max(0, self.num_blocks_for(num_total) - len(prefix.block_ids))
        num_revived = sum(1 for i in prefix.block_ids if blocks[i].ref_cnt == 0)  # leave the free queue
        if num_needed + num_revived > self.pool.num_free_blocks:
            return None
        if self.enable_prefix_caching:
            self.prefix_queries += request.num_tokens
            self.prefix_hits += prefix.num_tokens
        self.pool.acquire(blocks[i] for i in prefix.block_ids)
        table = self._tables[request.request_id] = list(prefix.block_ids)
        table.extend(block.block_id for block in self.pool.allocate(num_needed))
        if self.enable_prefix_caching:
            self._register_full_blocks(request, table, num_total)
        if self.sliding_window is not None:
            self._drop_behind_window(request.request_id, table, prefix.num_tokens)
        return list(table)

    def free(self, request: Request) -> None:
        """Release every block the request holds; unknown or already freed requests are ignored.

        Blocks registered for tokens the request never finished computing (it was preempted or
        aborted between scheduling and the step's update) are unregistered when nobody else holds
        them, so no later request can hit KV that was never written. Blocks are released
        last-first, so a sequence's tail is evicted before the prefix other requests may share.
        """
        table = self._tables.pop(request.request_id, None)
        self._num_registered.pop(request.request_id, None)
        dropped = self._num_dropped.pop(request.request_id, 0)  # entries already released (sliding window)
        if table is None:
            return
        blocks = self.pool.blocks
        for index in range(max(dropped, request.num_computed_tokens // self.block_size), len(table)):
            block = blocks[table[index]]
            if block.ref_cnt == 1:
                self.pool.uncache(block)
        self.pool.release(blocks[i] for i in reversed(table[dropped:]))

    def reset_prefix_cache(self) -> bool:
        """Forget all cached content; refused (False) while any request holds blocks."""
        return self.pool.reset_prefix_cache()

    # ------------------------------------------------------------------ hashing

    def _hash_full_blocks(self, request: Request, num_blocks: int) -> None:
        if len(request.block_hashes) < num_blocks:
            extend_block_hashes(request.block_hashes, request.all_token_ids, self.block_size, num_blocks)

    def _register_full_blocks(self, request: Request, table: list[int], num_tokens: int) -> None:
        """Register the table's blocks that are full once `num_tokens` tokens are computed.

        A block holding a pending token (its value still on the device, async scheduling) waits for
        the request's next allocation: only the known tokens in all_token_ids are hashed.
        """
        num_full = min(num_tokens, len(request.all_token_ids)) // self.block_size
        num_full = min(num_full, len(table))
        start = self._num_registered.get(request.request_id, 0)
        if num_full <= start:
            return
        self._hash_full_blocks(request, num_full)
        blocks = self.pool.blocks
        for index in range(start, num_full):
            block = blocks[table[index]]
            if block.block_hash is None:
                self.pool.cache(block, request.block_hashes[index])
        self._num_registered[request.request_id] = num_full
