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
    max_query_len: int
    max_seq_len: int
    shape: DecodeShape

    @property
    def is_pure_decode(self) -> bool:
        """Every request brings exactly one token: the shape a CUDA graph can replay."""
        return self.num_prefills == 0


def choose_num_splits(num_decodes: int, max_seq_len: int, shape: DecodeShape) -> int:
    """Enough context splits that (requests x KV heads x splits) covers the GPU, never empty ones."""
    if num_decodes == 0:
        return 1
    wanted = -(-PROGRAMS_PER_SM * shape.num_sms // (num_decodes * shape.num_kv_heads))
    return max(1, min(wanted, MAX_SPLITS, -(-max_seq_len // shape.block_n)))


def _partials(num_decodes: int, splits: int, shape: DecodeShape, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = num_decodes if splits > 1 else 0
    acc = torch.empty((rows, shape.num_heads, splits, shape.head_size), dtype=torch.float32, device=device)
    ml = torch.empty((rows, shape.num_heads, splits, 2), dtype=torch.float32, device=device)
    return acc, ml


def build(batch: AttentionBatch, shape: DecodeShape, device) -> TritonAttentionMetadata:
    """Metadata for one step; the only host-to-device copy is the two request index lists."""
    qlens = batch.query_lens_cpu
    decodes = [i for i, q in enumerate(qlens) if q == 1]
    prefills = [i for i, q in enumerate(qlens) if q > 1]
    pure_decode = len(decodes) == len(qlens)
    splits = choose_num_splits(len(decodes), batch.max_seq_len, shape)
    index = torch.arange(len(qlens), dtype=torch.int32, device=device) if pure_decode else None
    acc, ml = _partials(len(decodes), splits, shape, device)
    return TritonAttentionMetadata(
        query_start_loc=batch.query_start_loc.to(device, torch.int32),
        seq_lens=batch.seq_lens.to(device, torch.int32),
        block_tables=batch.block_tables.to(device, torch.int32),
        slot_mapping=batch.slot_mapping.to(device, torch.int64),
        decode_reqs=index if pure_decode else torch.tensor(decodes, dtype=torch.int32).to(device),
        prefill_reqs=torch.tensor(prefills, dtype=torch.int32).to(device),
        num_decodes=len(decodes),
        num_prefills=len(prefills),
        max_prefill_query_len=max((qlens[i] for i in prefills), default=0),
        num_splits=splits,
        partial_acc=acc,
        partial_ml=ml,
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
    acc, ml = _partials(batch_size, splits, shape, device)
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
        max_query_len=1,
        max_seq_len=max_seq_len,
        shape=shape,
    )


def fill_static(static: TritonAttentionMetadata, real: TritonAttentionMetadata) -> None:
    """Copy a pure-decode step's metadata into `static`; rows past the real batch become padding."""
    rows, width = real.num_decodes, real.block_tables.shape[1]
    if width > static.block_tables.shape[1]:
        raise ValueError(f"block table of width {width} exceeds the captured width {static.block_tables.shape[1]}")
    static.seq_lens[:rows].copy_(real.seq_lens, non_blocking=True)
    static.seq_lens[rows:].zero_()
    static.block_tables[:rows, :width].copy_(real.block_tables, non_blocking=True)
    static.slot_mapping[:rows].copy_(real.slot_mapping, non_blocking=True)
    static.slot_mapping[rows:].fill_(-1)
