"""TPU shape buckets: few, so that XLA compiles (and warms up) a bounded, small set of step graphs.

Token counts, request counts and block-table widths each go up by x4, up to the engine's limits
(the gather attention's work grows with the width, so a row may attend over up to 4x the blocks
it holds; the masked keys cost compute, never correctness). A workload is then served by at most
ShapeBuckets.num_shapes() forward graphs; the padding costs at most 4x on the token axis, which
XLA's fixed-shape programs repay by never recompiling.
"""

from __future__ import annotations

from tokenmill.interfaces import ShapeBuckets
from tokenmill.worker.padding import powers_of_two

MIN_TOKENS = 16
MIN_WIDTH = 4


def tpu_buckets(limits: dict[str, int]) -> ShapeBuckets:
    """Buckets covering the limits (one spare request for the padding request)."""
    return ShapeBuckets(
        token_counts=by_four(MIN_TOKENS, limits["max_num_batched_tokens"]),
        batch_sizes=by_four(1, limits["max_num_seqs"] + 1),
        block_table_widths=by_four(MIN_WIDTH, limits["max_blocks_per_seq"]),
    )


def by_four(low: int, high: int) -> tuple[int, ...]:
    """low, 4*low, 16*low, ... and the first power of two >= high (low a power of two)."""
    sizes = powers_of_two(low, high)
    return tuple(size for i, size in enumerate(sizes) if i % 2 == 0 or size == sizes[-1])


def step_shapes(buckets: ShapeBuckets) -> list[tuple[int, int, int, bool]]:
    """Every (T, B, W, rows) the core can hand the step: pure decodes (T == B, every row sampled) and
    token-bucket steps (rows = the padded B), skipping B > T + 1, which no step can fill."""
    shapes = [(b, b, w, False) for b in buckets.batch_sizes for w in buckets.block_table_widths]
    for t in buckets.token_counts:
        smallest_over = min((b for b in buckets.batch_sizes if b >= t + 1), default=buckets.batch_sizes[-1])
        shapes += [(t, b, w, True) for b in buckets.batch_sizes if b <= smallest_over
                   for w in buckets.block_table_widths]
    return shapes
