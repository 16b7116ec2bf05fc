"""Checks one recorded step against the padding and layout rules written on interfaces.AttentionBatch.

`batch_violations` returns what is wrong (an empty list when nothing is): the batch's own
consistency (query_start_loc, the *_cpu mirrors, slots vs block tables and positions) on every
platform; exact sizes with nothing padded on eager ones; and on static-shape ones, T, B and the
block-table width at the smallest bucket that fits, padding requests after the real ones, padding
tokens with id 0 at position 0 in the null block, and null-block entries past each row's blocks.
"""

from __future__ import annotations

import bisect

import torch

from tokenmill.interfaces import AttentionBatch, ShapeBuckets


def batch_violations(batch: AttentionBatch, input_ids: torch.Tensor, positions: torch.Tensor, block_size: int,
                     buckets: ShapeBuckets | None) -> list[str]:
    """Rule violations of one step; `buckets` is None on eager platforms."""
    problems = _consistency(batch, input_ids, positions, block_size)
    if problems:  # the rules below read the batch through these fields
        return problems
    if buckets is None:
        return _eager(batch)
    return _static_sizes(batch, buckets) + _static_padding(batch, input_ids, positions, block_size)


def _consistency(batch: AttentionBatch, input_ids: torch.Tensor, positions: torch.Tensor, block_size: int) -> list[str]:
    out, num_tokens, num_reqs = [], batch.slot_mapping.shape[0], batch.seq_lens.shape[0]
    starts = batch.query_start_loc.tolist()
    if len(starts) != num_reqs + 1 or starts[0] != 0 or starts[-1] != num_tokens:
        out.append(f"query_start_loc {starts} must have B + 1 = {num_reqs + 1} entries from 0 to T = {num_tokens}")
    elif [b - a for a, b in zip(starts, starts[1:])] != batch.query_lens_cpu:
        out.append(f"query_lens_cpu {batch.query_lens_cpu} differs from query_start_loc's steps {starts}")
    if batch.seq_lens.tolist() != batch.seq_lens_cpu:
        out.append(f"seq_lens_cpu {batch.seq_lens_cpu} differs from seq_lens {batch.seq_lens.tolist()}")
    if any(q > s for q, s in zip(batch.query_lens_cpu, batch.seq_lens_cpu)):
        out.append(f"a request has more new tokens than tokens: query_lens {batch.query_lens_cpu}, seq_lens {batch.seq_lens_cpu}")
    if batch.max_query_len != max(batch.query_lens_cpu) or batch.max_seq_len != max(batch.seq_lens_cpu):
        out.append(f"max_query_len {batch.max_query_len} / max_seq_len {batch.max_seq_len} are not the lists' maxima")
    if tuple(batch.block_tables.shape[:1]) != (num_reqs,) or batch.block_tables.dim() != 2:
        out.append(f"block_tables {tuple(batch.block_tables.shape)} must be [B = {num_reqs}, width]")
    if input_ids.shape[0] != num_tokens or positions.shape[0] != num_tokens:
        out.append(f"the step got {input_ids.shape[0]} token ids and {positions.shape[0]} positions for T = {num_tokens}")
    dtypes = {"query_start_loc": torch.int32, "seq_lens": torch.int32, "block_tables": torch.int32, "slot_mapping": torch.int64}
    out += [f"{name} is {getattr(batch, name).dtype}, the contract says {dtype}"
            for name, dtype in dtypes.items() if getattr(batch, name).dtype != dtype]
    return out or _real_tokens(batch, positions, block_size)


def _real_tokens(batch: AttentionBatch, positions: torch.Tensor, block_size: int) -> list[str]:
    """Each real request's rows sit at its newest positions, and their slots follow its block table."""
    out, tables, slots = [], batch.block_tables.tolist(), batch.slot_mapping.tolist()
    starts, pos = batch.query_start_loc.tolist(), positions.tolist()
    for b in range(len(batch.seq_lens_cpu) - batch.num_padded_reqs):
        q, s = batch.query_lens_cpu[b], batch.seq_lens_cpu[b]
        rows = range(starts[b], starts[b] + q)
        if [pos[r] for r in rows] != list(range(s - q, s)):
            out.append(f"request {b}: positions {[pos[r] for r in rows]}, expected {s - q}..{s - 1}")
            continue
        want = [tables[b][p // block_size] * block_size + p % block_size for p in range(s - q, s)]
        if [slots[r] for r in rows] != want:
            out.append(f"request {b}: slots {[slots[r] for r in rows]} do not follow its block table {tables[b]}")
    return out


def _eager(batch: AttentionBatch) -> list[str]:
    if batch.num_padded_tokens or batch.num_padded_reqs or batch.null_block:
        return [f"an eager platform's step is padded (num_padded_tokens {batch.num_padded_tokens}, "
                f"num_padded_reqs {batch.num_padded_reqs}, null_block {batch.null_block}); it must have exact sizes"]
    return []


def smallest_bucket(sizes: tuple[int, ...], value: int) -> int | None:
    """The smallest size >= value, or None when none is."""
    index = bisect.bisect_left(sizes, value)
    return sizes[index] if index < len(sizes) else None


def _static_sizes(batch: AttentionBatch, buckets: ShapeBuckets) -> list[str]:
    """T, B and the width are the smallest buckets that fit the real step (decode: T == B)."""
    num_tokens, num_reqs, width = batch.slot_mapping.shape[0], len(batch.seq_lens_cpu), batch.block_tables.shape[1]
    real_tokens, real_reqs = num_tokens - batch.num_padded_tokens, num_reqs - batch.num_padded_reqs
    if real_reqs < 1 or real_tokens < 1:
        return [f"the step has {real_reqs} real requests and {real_tokens} real tokens; both must be >= 1"]
    decode = all(q == 1 for q in batch.query_lens_cpu[:real_reqs])
    out = []
    if decode:
        want_b = smallest_bucket(buckets.batch_sizes, real_reqs)
        if num_reqs != want_b or num_tokens != num_reqs:
            out.append(f"a pure-decode step of {real_reqs} requests must have B = T = {want_b}; got B {num_reqs}, T {num_tokens}")
    else:
        want_t = smallest_bucket(buckets.token_counts, real_tokens)
        want_b = smallest_bucket(buckets.batch_sizes, real_reqs + (want_t != real_tokens))
        if (num_tokens, num_reqs) != (want_t, want_b):
            out.append(f"a step of {real_tokens} tokens over {real_reqs} requests must be padded to T {want_t}, "
                       f"B {want_b} (one padding request holds the padding tokens); got T {num_tokens}, B {num_reqs}")
    used = max(_leading_real(row, batch.null_block) for row in batch.block_tables.tolist()[:real_reqs])
    if width != smallest_bucket(buckets.block_table_widths, used):
        out.append(f"block-table width {width} is not the smallest bucket of {buckets.block_table_widths} >= {used}")
    return out


def _leading_real(row: list[int], null_block: int) -> int:
    return next((i for i, block in enumerate(row) if block == null_block), len(row))


def _static_padding(batch: AttentionBatch, input_ids: torch.Tensor, positions: torch.Tensor, block_size: int) -> list[str]:
    out, null = [], batch.null_block
    num_tokens, num_reqs = batch.slot_mapping.shape[0], len(batch.seq_lens_cpu)
    real_tokens, real_reqs = num_tokens - batch.num_padded_tokens, num_reqs - batch.num_padded_reqs
    tables, slots = batch.block_tables.tolist(), batch.slot_mapping.tolist()
    decode = all(q == 1 for q in batch.query_lens_cpu[:real_reqs])
    pad_q, pad_s = batch.query_lens_cpu[real_reqs:], batch.seq_lens_cpu[real_reqs:]
    if decode:
        want_q = [1] * batch.num_padded_reqs
    else:
        want_q = ([batch.num_padded_tokens] + [0] * (batch.num_padded_reqs - 1)) if batch.num_padded_reqs else []
    if pad_q != want_q or pad_s != want_q:
        out.append(f"padding requests have query_lens {pad_q}, seq_lens {pad_s}; the rules give {want_q} for both")
    if any(block != null for row in tables[real_reqs:] for block in row):
        out.append(f"a padding request's block-table row is not all null_block {null}: {tables[real_reqs:]}")
    for b in range(real_reqs):
        owned = -(-batch.seq_lens_cpu[b] // block_size)
        if null in tables[b][:owned]:
            out.append(f"request {b} holds the null block {null} among its own blocks {tables[b][:owned]}")
        lead = _leading_real(tables[b], null)
        if any(block != null for block in tables[b][lead:]):
            out.append(f"request {b}'s row {tables[b]} has real blocks after null_block entries")
    if any(slot // block_size != null for slot in slots[real_tokens:]):
        out.append(f"padding tokens' slots {slots[real_tokens:]} are not all in the null block {null}")
    if any(slot // block_size == null for slot in slots[:real_tokens]):
        out.append(f"a real token's slot is in the null block {null}")
    if input_ids[real_tokens:].any() or positions[real_tokens:].any():
        out.append(f"padding tokens must have id 0 and position 0: ids {input_ids[real_tokens:].tolist()}, "
                   f"positions {positions[real_tokens:].tolist()}")
    return out
