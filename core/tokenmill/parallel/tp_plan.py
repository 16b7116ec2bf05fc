"""TPPlan: which attention heads, KV heads and vocabulary rows one tensor-parallel rank holds."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.errors import TokenmillError


@dataclass(frozen=True, slots=True)
class TPPlan:
    """The split of one model over `world_size` ranks, seen from `rank`.

    Query heads split evenly. KV heads split evenly when they divide by the world size; otherwise
    each KV head is replicated `kv_replicas` times first (the smallest count for which the
    replicated heads divide by, or into, the world size and still group the query heads evenly).
    With fewer replicated KV heads than ranks, each rank holds one and neighbours share it.
    """

    rank: int
    world_size: int
    num_heads: int  # Hq of the whole model
    num_kv_heads: int  # Hkv of the whole model
    vocab_size: int  # V
    intermediate_size: int  # I
    kv_replicas: int

    @classmethod
    def build(cls, rank: int, world_size: int, *, num_heads: int, num_kv_heads: int, vocab_size: int,
              intermediate_size: int) -> TPPlan:
        """Check that the model splits over `world_size` ranks; a model that cannot raises TokenmillError."""
        if num_heads % world_size:
            raise TokenmillError(f"--tensor-parallel-size {world_size} does not divide the model's {num_heads} "
                                 f"attention heads; use a size that divides {num_heads}")
        if intermediate_size % world_size:
            raise TokenmillError(f"--tensor-parallel-size {world_size} does not divide the model's MLP width "
                                 f"{intermediate_size}; use a size that divides {intermediate_size}")
        return cls(rank, world_size, num_heads, num_kv_heads, vocab_size, intermediate_size,
                   _kv_replicas(num_heads, num_kv_heads, world_size))

    @property
    def local_heads(self) -> int:
        return self.num_heads // self.world_size

    @property
    def expanded_kv_heads(self) -> int:
        """KV heads after replication, over the whole model."""
        return self.num_kv_heads * self.kv_replicas

    @property
    def local_kv_heads(self) -> int:
        return max(1, self.expanded_kv_heads // self.world_size)

    def q_heads(self) -> range:
        """The global query heads this rank computes."""
        return range(self.rank * self.local_heads, (self.rank + 1) * self.local_heads)

    def kv_heads(self) -> list[int]:
        """The checkpoint's KV heads this rank holds, in local order (may repeat a head once replicated)."""
        expanded = self.expanded_kv_heads
        if expanded >= self.world_size:
            first = self.rank * self.local_kv_heads
            chosen = range(first, first + self.local_kv_heads)
        else:
            chosen = [self.rank * expanded // self.world_size]
        return [e // self.kv_replicas for e in chosen]

    @property
    def vocab_shard(self) -> int:
        """Rows of the embedding and output head per rank (the last rank's are zero-padded)."""
        return -(-self.vocab_size // self.world_size)

    @property
    def vocab_start(self) -> int:
        return self.rank * self.vocab_shard

    @property
    def local_intermediate(self) -> int:
        return self.intermediate_size // self.world_size


def _kv_replicas(num_heads: int, num_kv_heads: int, world_size: int) -> int:
    """The smallest replication of the KV heads that splits over `world_size` ranks (1: none)."""
    for replicas in range(1, num_heads // num_kv_heads + 1):
        expanded = num_kv_heads * replicas
        if num_heads % expanded:
            continue
        if expanded % world_size == 0 or world_size % expanded == 0:
            return replicas
    raise TokenmillError(f"the model's {num_heads} attention heads over {num_kv_heads} KV heads cannot split "
                         f"over {world_size} ranks; use a tensor-parallel size that divides {num_heads}")
