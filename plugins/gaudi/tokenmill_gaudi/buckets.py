"""Gaudi's shape buckets: powers of two up to a step, then linear steps (as Habana's vLLM fork warms up).

Every padded step shape is one HPU graph, so the sizes grow geometrically while they are small
(where padding costs most in relative terms) and linearly once they are large (where a doubling
would waste most). `limits` come from the engine (tokenmill_shape_buckets).
"""

from __future__ import annotations

from tokenmill.interfaces import ShapeBuckets

TOKEN_MIN, TOKEN_STEP = 32, 256  # prefill / mixed token counts: 32, 64, 128, 256, then every 256
BATCH_STEP = 32  # request counts: 1, 2, 4, ..., 32, then every 32
WIDTH_STEP = 32  # block-table widths: 1, 2, 4, ..., 32, then every 32 blocks


def exp_then_linear(low: int, step: int, high: int) -> tuple[int, ...]:
    """low, 2*low, ... up to `step`, then step, 2*step, ... up to the first size >= high."""
    sizes = [low]
    while sizes[-1] < high:
        last = sizes[-1]
        sizes.append(last * 2 if last < step else last + step)
    return tuple(sizes)


def gaudi_buckets(limits: dict[str, int]) -> ShapeBuckets:
    """Buckets covering the engine's limits (one spare request for the padding request)."""
    return ShapeBuckets(
        token_counts=exp_then_linear(TOKEN_MIN, TOKEN_STEP, limits["max_num_batched_tokens"]),
        batch_sizes=exp_then_linear(1, BATCH_STEP, limits["max_num_seqs"] + 1),
        block_table_widths=exp_then_linear(1, WIDTH_STEP, limits["max_blocks_per_seq"]),
    )
