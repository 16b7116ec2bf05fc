"""The static-shape policy: default buckets, and padding one step's host lists up to them.

Only static-shape platforms pad; eager ones never build a StepPadding. The rules a backend may rely
on are written on interfaces.AttentionBatch; this module is their one implementation.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from tokenmill.errors import TokenmillError
from tokenmill.interfaces import ShapeBuckets

MIN_TOKEN_BUCKET = 16


def powers_of_two(low: int, high: int) -> tuple[int, ...]:
    """low, 2*low, ... up to the first power >= high (low itself a power of two)."""
    sizes = [low]
    while sizes[-1] < high:
        sizes.append(sizes[-1] * 2)
    return tuple(sizes)


def default_buckets(limits: dict[str, int]) -> ShapeBuckets:
    """Powers of two: tokens from 16, requests from 1 (one spare for the padding request), blocks from 1."""
    return ShapeBuckets(
        token_counts=powers_of_two(MIN_TOKEN_BUCKET, limits["max_num_batched_tokens"]),
        batch_sizes=powers_of_two(1, limits["max_num_seqs"] + 1),
        block_table_widths=powers_of_two(1, limits["max_blocks_per_seq"]),
    )


def check_covers(buckets: ShapeBuckets, limits: dict[str, int], platform: str) -> None:
    """Refuse buckets that some step within the limits would not fit, naming the flag to lower."""
    needs = (("token_counts", "max_num_batched_tokens", "--max-num-batched-tokens", 0),
             ("batch_sizes", "max_num_seqs", "--max-num-seqs", 1),
             ("block_table_widths", "max_blocks_per_seq", "--max-model-len", 0))
    for field, limit, flag, spare in needs:
        largest = max(getattr(buckets, field))
        if largest < limits[limit] + spare:
            raise TokenmillError(
                f"platform {platform!r} declares {field} up to {largest}, but {flag} asks for "
                f"{limits[limit]}{' (plus one padding request)' if spare else ''}; lower {flag} to fit its buckets"
            )


@dataclass(slots=True)
class StepPadding:
    """Pads a step's lists in place: T, B and the block-table width up to the buckets."""

    buckets: ShapeBuckets
    block_size: int
    null_block: int  # reserved by the engine: never handed to a request

    def pad(self, lists) -> tuple[int, int]:
        """Pad `lists` (step_inputs._Lists) in place; returns (padding tokens, padding requests)."""
        num_tokens, num_reqs = len(lists.tokens), len(lists.query_lens)
        decode = all(n == 1 for n in lists.query_lens)
        padded_reqs = _bucket(self.buckets.batch_sizes, num_reqs, "batch size")
        padded_tokens = padded_reqs if decode else _bucket(self.buckets.token_counts, num_tokens, "token count")
        if padded_tokens > num_tokens and not decode and padded_reqs == num_reqs:
            padded_reqs = _bucket(self.buckets.batch_sizes, num_reqs + 1, "batch size")
        extra_tokens, extra_reqs = padded_tokens - num_tokens, padded_reqs - num_reqs
        self._pad_tokens(lists, extra_tokens)
        self._pad_requests(lists, extra_tokens, extra_reqs, decode)
        self._pad_tables(lists)
        return extra_tokens, extra_reqs

    def _pad_tokens(self, lists, count: int) -> None:
        null_slot = self.null_block * self.block_size
        lists.tokens.extend([0] * count)
        lists.positions.extend([0] * count)
        lists.slots.extend(null_slot + i % self.block_size for i in range(count))

    def _pad_requests(self, lists, extra_tokens: int, extra_reqs: int, decode: bool) -> None:
        if decode:  # one token each: the step stays a pure decode
            lens = [1] * extra_reqs
        else:  # the first padding request holds every padding token
            lens = [extra_tokens] + [0] * (extra_reqs - 1) if extra_reqs else []
        lists.query_lens.extend(lens)
        lists.seq_lens.extend(lens)
        lists.tables.extend([self.null_block] for _ in lens)

    def _pad_tables(self, lists) -> None:
        width = _bucket(self.buckets.block_table_widths, max(map(len, lists.tables)), "block-table width")
        lists.tables[:] = [t + [self.null_block] * (width - len(t)) for t in lists.tables]


def _bucket(sizes: tuple[int, ...], value: int, what: str) -> int:
    index = bisect.bisect_left(sizes, value)
    if index == len(sizes):
        raise TokenmillError(f"a step's {what} of {value} exceeds the largest bucket {sizes[-1]}; "
                             f"the engine's limits should have prevented this")
    return sizes[index]
