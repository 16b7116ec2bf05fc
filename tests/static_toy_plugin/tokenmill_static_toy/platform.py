"""The static_toy platform: a host-CPU device that asks the core for padded, bucketed steps."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.interfaces import Availability, ShapeBuckets
from tokenmill.worker.padding import powers_of_two

PLATFORM_NAME = "static_toy"


@dataclass(frozen=True, slots=True)
class StaticToyPlatform:
    """Tensors on the host CPU; static shapes, as XLA and HPU graphs want them."""

    name: str = PLATFORM_NAME
    device_type: str = "cpu"
    priority: int = 2  # chosen only by name: every real device outranks it
    contract_version: str = "2.0"
    supported_dtypes: tuple[str, ...] = ("float32", "bfloat16")
    dist_backend: str = "gloo"
    static_shapes: bool = True
    graph_capture: str | None = None

    def is_available(self) -> Availability:
        """Always: it needs nothing but torch."""
        return Availability(True, "static-shape example device on the host CPU")


def buckets_for(limits: dict[str, int]) -> ShapeBuckets:
    """Geometric buckets, x4 apart, so a whole workload compiles few shapes (fewer than the default)."""
    return ShapeBuckets(
        token_counts=_by_four(32, limits["max_num_batched_tokens"]),
        batch_sizes=_by_four(1, limits["max_num_seqs"] + 1),
        block_table_widths=_by_four(4, limits["max_blocks_per_seq"]),
    )


def _by_four(low: int, high: int) -> tuple[int, ...]:
    return tuple(size for i, size in enumerate(powers_of_two(low, high)) if i % 2 == 0 or size >= high)
