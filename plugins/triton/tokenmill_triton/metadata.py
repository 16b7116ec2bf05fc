"""TritonAttentionMetadata: one step's attention inputs, split into decode and prefill requests.

Built once per step by TritonAttentionBackend.build_metadata and read by every layer. Decode
requests (one new token) go to the split-context decode kernel; the rest to the prefill kernel.
The static variant (`static_decode_metadata` + `fill_static`) keeps every tensor at a fixed
address and shape so a CUDA graph captured with it can be replayed for any smaller batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenmill.interfaces import AttentionBatch

MAX_SPLITS = 32
PROGRAMS_PER_SM = 2  # decode programs wanted per multiprocessor before the context is split


@dataclass(frozen=True, slots=True)
class DecodeShape:
    """The facts, fixed for a model, that size the decode kernel's grid and partial buffers."""

    num_heads: int  # Hq
    num_kv_heads: int  # Hkv
    head_size: int  # D
    block_size: int  # S
    num_sms: int  # multiprocessors to fill
    block_n: int  # tokens per decode K/V tile


@dataclass(slots=True)
class TritonAttentionMetadata:
    """Device tensors and host counts for one step; tensor shapes use B requests, T tokens."""

    query_start_loc: torch.Tensor  # int32 [B + 1]
    seq_lens: torch.Tensor  # int32 [B]
    block_tables: torch.Tensor  # int32 [B, W]
    slot_mapping: torch.Tensor  # int64 [T], -1 for padding
    decode_reqs: torch.Tensor  # int32 [Bd], requests with exactly one new token
    prefill_reqs: torch.Tensor  # int32 [Bp], the others
    num_decodes: int
    num_prefills: int
    max_prefill_query_len: int
    num_splits: int  # context splits of the decode kernel
    partial_acc: torch.Tensor  # float32 [Bd, Hq, num_splits, D] (unused when num_splits == 1)
    partial_ml: torch.Tensor  # float32 [Bd, Hq, num_splits, 2]: running max and sum
    split_counts: torch.Tensor  # int32 [Bd, Hkv], all zero between kernels: splits done so far
    max_query_len: int
    max_seq_len: int
    shape: DecodeShape

    @property
    def is_pure_decode(self) -> bool:
        """Every request brings exactly one token: the shape a CUDA graph can replay."""
        return self.num_prefills == 0


def choose_num_splits(num_decodes: int, max_seq_len: int, shape: DecodeShape) -> int:
    """Enough context splits that (requests x KV heads x splits) covers the GPU, never empty ones.

    A power of two: the split count is a compile-time constant of the decode kernel, so serving
    meets at most six variants (1 to 32), not one per count, each compiled the first time it is met
    (a compile of ~1 s inside a request's first token).
    """
    if num_decodes == 0:
        return 1
    wanted = -(-PROGRAMS_PER_SM * shape.num_sms // (num_decodes * shape.num_kv_heads))
    splits = max(1, min(wanted, MAX_SPLITS, -(-max_seq_len // shape.block_n)))
    return 1 << (splits.bit_length() - 1)  # rounded down, so no split is ever empty


class DecodeWorkspace:
    """Grow-only device buffers behind each step's split partials and split counters.

    Steps run one after another on one stream, so every step may reuse the same memory; this
    saves the allocations (and the counters' memset) a fresh step would cost. The decode kernel
    leaves the counters at zero when it ends, ready for the next layer and the next step.
    """

    def __init__(self, shape: DecodeShape, device) -> None:
        self.shape = shape
        self.device = device
        self.acc, self.ml, self.counts = _partials(0, MAX_SPLITS, shape, device)

    def take(self, num_decodes: int, splits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(acc [Bd, Hq, splits, D], ml [Bd, Hq, splits, 2], counts int32 [Bd, Hkv]) views."""
        s = self.shape
        rows = num_decodes if splits > 1 else 0
        capacity = self.counts.numel() // s.num_kv_heads  # rows of MAX_SPLITS partials
        if rows > capacity:
            self.acc, self.ml, self.counts = _partials(max(rows, 2 * capacity), MAX_SPLITS, s, self.device)
        acc_shape, ml_shape = (rows, s.num_heads, splits, s.head_size), (rows, s.num_heads, splits, 2)
        return (_prefix(self.acc, acc_shape), _prefix(self.ml, ml_shape),
                _prefix(self.counts, (rows, s.num_kv_heads)))


def _prefix(buffer: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The first elements of `buffer`, viewed as a contiguous tensor of `shape`."""
    return buffer.view(-1)[:_numel(shape)].view(shape)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _partials(rows: int, splits: int, shape: DecodeShape, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    acc = torch.empty((rows, shape.num_heads, splits, shape.head_size), dtype=torch.float32, device=device)
    ml = torch.empty((rows, shape.num_heads, splits, 2), dtype=torch.float32, device=device)
    return acc, ml, torch.zeros((rows, shape.num_kv_heads), dtype=torch.int32, device=device)


def build(batch: AttentionBatch, workspace: DecodeWorkspace, arange: torch.Tensor) -> TritonAttentionMetadata:
    """Metadata for one step; `arange` is int32 [>= B] on the device (a pure-decode step's request list).

    A pure-decode step copies nothing to the device; a mixed step copies its two request lists.
    """
    shape, device = workspace.shape, workspace.device
    qlens = batch.query_lens_cpu
    pure_decode = batch.max_query_len == 1
    decodes = range(len(qlens)) if pure_decode else [i for i, q in enumerate(qlens) if q == 1]
    prefills = [] if pure_decode else [i for i, q in enumerate(qlens) if q > 1]
    splits = choose_num_splits(len(decodes), batch.max_seq_len, shape)
    acc, ml, counts = workspace.take(len(decodes), splits)
    return TritonAttentionMetadata(
        query_start_loc=batch.query_start_loc.to(device, torch.int32),
        seq_lens=batch.seq_lens.to(device, torch.int32),
        block_tables=batch.block_tables.to(device, torch.int32),
        slot_mapping=batch.slot_mapping.to(device, torch.int64),
        decode_reqs=arange[:len(qlens)] if pure_decode else _index(decodes, device),
        prefill_reqs=arange[:0] if pure_decode else _index(prefills, device),
        num_decodes=len(decodes),
        num_prefills=len(prefills),
        max_prefill_query_len=max((qlens[i] for i in prefills), default=0),
        num_splits=splits,
        partial_acc=acc,
        partial_ml=ml,
        split_counts=counts,
        max_query_len=batch.max_query_len,
        max_seq_len=batch.max_seq_len,
        shape=shape,
    )


def static_decode_metadata(batch_size: int, max_blocks_per_seq: int, shape: DecodeShape, device) -> TritonAttentionMetadata:
    """Fixed-address decode metadata for `batch_size` rows, every row padding until filled.

    The split count assumes the longest sequence the block table can hold, so it stays right
    for every batch replayed through it.
    """
    max_seq_len = max_blocks_per_seq * shape.block_size
    splits = choose_num_splits(batch_size, max_seq_len, shape)
    acc, ml, counts = _partials(batch_size if splits > 1 else 0, splits, shape, device)
    index = torch.arange(batch_size + 1, dtype=torch.int32, device=device)
    return TritonAttentionMetadata(
        query_start_loc=index,
        seq_lens=torch.zeros(batch_size, dtype=torch.int32, device=device),
        block_tables=torch.zeros((batch_size, max_blocks_per_seq), dtype=torch.int32, device=device),
        slot_mapping=torch.full((batch_size,), -1, dtype=torch.int64, device=device),
        decode_reqs=index[:batch_size],
        prefill_reqs=torch.zeros(0, dtype=torch.int32, device=device),
        num_decodes=batch_size,
        num_prefills=0,
        max_prefill_query_len=0,
        num_splits=splits,
        partial_acc=acc,
        partial_ml=ml,
        split_counts=counts,
        max_query_len=1,
        max_seq_len=max_seq_len,
        shape=shape,
    )


def _index(rows: list[int], device) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int32).to(device, non_blocking=True)


def fill_static(static: TritonAttentionMetadata, real: TritonAttentionMetadata) -> None:
    """Copy a pure-decode step's metadata into `static`; rows past the real batch become padding."""
    rows, width = real.num_decodes, real.block_tables.shape[1]
    if width > static.block_tables.shape[1]:
        raise ValueError(f"block table of width {width} exceeds the captured width {static.block_tables.shape[1]}")
    static.seq_lens[:rows].copy_(real.seq_lens, non_blocking=True)
    static.block_tables[:rows, :width].copy_(real.block_tables, non_blocking=True)
    static.slot_mapping[:rows].copy_(real.slot_mapping, non_blocking=True)
    if rows < static.num_decodes:
        static.seq_lens[rows:].zero_()
        static.slot_mapping[rows:].fill_(-1)
