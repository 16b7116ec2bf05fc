"""Per-step plans for the CPU attention backend: block tables, gather indices and masks, built once per step.

Everything here runs once per model step, before the first layer, from the host-side lists of
an AttentionBatch, so that the per-layer `forward` only calls kernels (the native decode kernel,
gathers, SDPA), with no Python loop over decode requests and no host sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokenmill.interfaces import AttentionBatch


class KVRows:
    """Row indices into a layer's cache viewed as [2 * N, S * Hkv * D]: keys' blocks, then values'.

    One index_select along dim 0 of that 2-D view is the fastest gather torch offers on the CPU
    (rows are contiguous runs of memory). N is only known from the cache, so the indices are made
    on the first layer's call and reused by the others.
    """

    __slots__ = ("block_ids", "_num_blocks", "_rows")

    def __init__(self, block_ids: torch.Tensor) -> None:
        self.block_ids = block_ids  # int64 [M]
        self._num_blocks = -1
        self._rows = block_ids

    def for_pool(self, num_blocks: int) -> torch.Tensor:
        """int64 [2 * M]: the blocks' key rows, then their value rows, in a pool of N blocks."""
        if num_blocks != self._num_blocks:
            self._rows = torch.cat((self.block_ids, self.block_ids + num_blocks))
            self._num_blocks = num_blocks
        return self._rows


@dataclass(slots=True)
class DecodePlan:
    """All requests of the step with one new token, attended together in one call.

    The native kernel reads block_table and seq_lens; the gather + SDPA fallback reads kv_rows,
    max_len and mask.
    """

    rows: slice | torch.Tensor  # their query rows: a slice when consecutive, else int64 [Bd]
    block_table: torch.Tensor  # int64 [Bd, nb] contiguous, each request's first nb blocks
    seq_lens: torch.Tensor  # int64 [Bd]
    max_len: int  # L, the longest of their seq_lens; keys are padded to it
    mask: torch.Tensor | None  # bool [Bd, 1, 1, L], True where key j < seq_len; None if all equal
    kv_rows: KVRows = field(init=False)

    def __post_init__(self) -> None:
        self.kv_rows = KVRows(self.block_ids)

    @property
    def block_ids(self) -> torch.Tensor:
        """int64 [Bd * nb]: the block table row-major, the order the gather fallback reads."""
        return self.block_table.view(-1)


@dataclass(slots=True)
class PrefillPlan:
    """One request with several new tokens (a prefill chunk, maybe on top of cached KV)."""

    start: int  # its query rows are start:end
    end: int
    seq_len: int  # cached + new tokens
    block_ids: torch.Tensor | None  # int64 [ceil(seq_len / S)]; None when nothing was cached
    # bool [G * query_len, seq_len]: row g * query_len + i (query head g of a KV head's group, token
    # i) sees keys j <= seq_len - query_len + i; None when nothing was cached
    mask: torch.Tensor | None
    kv_rows: KVRows | None = field(init=False)

    def __post_init__(self) -> None:
        self.kv_rows = KVRows(self.block_ids) if self.block_ids is not None else None


@dataclass(slots=True)
class CpuAttentionMetadata:
    """What `CpuAttentionBackend.forward` needs for every layer of one step."""

    slot_mapping: torch.Tensor  # int64 [T], where each new token's k/v is written
    num_tokens: int  # T
    pure_decode: bool  # every row belongs to the decode group, in order: no output scatter needed
    decode: DecodePlan | None
    prefills: list[PrefillPlan]
    # masks of windowed layers, made by their first layer's call and reused by the others:
    # (plan index, window) -> bool mask; plan index -1 is the decode group
    windowed_masks: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def decode_mask(self, window: int | None) -> torch.Tensor | None:
        """The decode group's mask, [Bd, 1, 1, L]: key j of a request of length n is seen when
        n - window <= j < n (every j < n without a window); None when nothing is masked."""
        plan = self.decode
        if window is None or window >= plan.max_len:
            return plan.mask
        key = (-1, window)
        if key not in self.windowed_masks:
            lens = plan.seq_lens.unsqueeze(1)  # [Bd, 1]
            j = torch.arange(plan.max_len)  # [L]
            self.windowed_masks[key] = ((j < lens) & (j >= lens - window)).view(-1, 1, 1, plan.max_len)
        return self.windowed_masks[key]

    def prefill_mask(self, index: int, window: int | None, group: int) -> torch.Tensor:
        """Prefill plan `index`'s mask, [G * ql, seq_len]: row g * ql + i (token i, at position p) sees
        keys j <= p and, with a window, j > p - window. Always a mask, also where nothing is cached."""
        plan = self.prefills[index]
        if plan.mask is not None and (window is None or window >= plan.seq_len):
            return plan.mask
        key = (index, window or 0)
        if key not in self.windowed_masks:
            query_len = plan.end - plan.start
            rows = (torch.arange(query_len) + plan.seq_len - query_len).repeat(group).unsqueeze(1)  # [G * ql, 1]
            j = torch.arange(plan.seq_len).unsqueeze(0)  # [1, seq_len]
            mask = j <= rows
            self.windowed_masks[key] = mask & (j > rows - window) if window else mask
        return self.windowed_masks[key]


def build_metadata(batch: AttentionBatch, block_size: int, group: int) -> CpuAttentionMetadata:
    """Split the batch into one decode group and per-request prefill plans (G = `group` query heads per KV head)."""
    starts = _starts(batch.query_lens_cpu)
    block_tables = batch.block_tables.to(torch.int64)  # [B, max_blocks]
    decode_ids = [b for b, n in enumerate(batch.query_lens_cpu) if n == 1]
    prefills = [
        _prefill_plan(block_tables[b], starts[b], batch.query_lens_cpu[b], batch.seq_lens_cpu[b], block_size, group)
        for b, n in enumerate(batch.query_lens_cpu)
        if n > 1
    ]
    return CpuAttentionMetadata(
        slot_mapping=batch.slot_mapping.to(torch.int64),
        num_tokens=starts[-1],
        pure_decode=bool(decode_ids) and not prefills,
        decode=_decode_plan(block_tables, decode_ids, starts, batch.seq_lens_cpu, block_size) if decode_ids else None,
        prefills=prefills,
    )


def _starts(query_lens: list[int]) -> list[int]:
    """Cumulative query lengths, [B + 1], computed on the host."""
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    return starts


def _decode_plan(
    block_tables: torch.Tensor, ids: list[int], starts: list[int], seq_lens: list[int], block_size: int
) -> DecodePlan:
    lens = [seq_lens[b] for b in ids]
    max_len = max(lens)
    num_blocks = -(-max_len // block_size)
    rows_list = [starts[b] for b in ids]
    consecutive = rows_list == list(range(rows_list[0], rows_list[0] + len(ids)))
    rows = slice(rows_list[0], rows_list[0] + len(ids)) if consecutive else torch.tensor(rows_list)
    ids_t = torch.tensor(ids, dtype=torch.int64)
    table = block_tables.index_select(0, ids_t)[:, :num_blocks].contiguous()  # [Bd, nb]
    lens_t = torch.tensor(lens, dtype=torch.int64)  # [Bd]
    mask = None
    if min(lens) != max_len:
        mask = (torch.arange(max_len) < lens_t.unsqueeze(1)).view(len(ids), 1, 1, max_len)
    return DecodePlan(rows, table, lens_t, max_len, mask)


def _prefill_plan(
    table: torch.Tensor, start: int, query_len: int, seq_len: int, block_size: int, group: int
) -> PrefillPlan:
    cached = seq_len - query_len
    if cached == 0:  # the new keys are the whole sequence: plain causal attention on them
        return PrefillPlan(start, start + query_len, seq_len, None, None)
    block_ids = table[: -(-seq_len // block_size)].contiguous()  # [nb]
    rows = (torch.arange(query_len) + cached).repeat(group).unsqueeze(1)  # [G * ql, 1], each row's position
    mask = torch.arange(seq_len).unsqueeze(0) <= rows  # [G * ql, seq_len]
    return PrefillPlan(start, start + query_len, seq_len, block_ids, mask)
