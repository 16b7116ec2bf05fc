"""The CPU backend's step plans take their fast paths, and strided q/k/v give the same answer."""

from __future__ import annotations

import torch

from tokenmill.interfaces import AttentionBatch, AttentionSpec
from tokenmill_cpu.attention import CpuAttentionBackend

SPEC = AttentionSpec(num_heads=6, num_kv_heads=2, head_size=8, block_size=4, dtype=torch.float32)


def _batch(query_lens: list[int], seq_lens: list[int], tables: list[list[int]]) -> AttentionBatch:
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    width = max(map(len, tables))
    slots = [t[p // 4] * 4 + p % 4 for t, q, s in zip(tables, query_lens, seq_lens) for p in range(s - q, s)]
    return AttentionBatch(
        query_start_loc=torch.tensor(starts, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
        slot_mapping=torch.tensor(slots),
        query_lens_cpu=query_lens,
        seq_lens_cpu=seq_lens,
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
    )


def test_pure_decode_of_equal_lengths_needs_no_mask_and_no_scatter():
    meta = CpuAttentionBackend(SPEC).build_metadata(_batch([1, 1], [6, 6], [[3, 1], [0, 2]]))
    assert meta.pure_decode and meta.decode.mask is None and meta.decode.rows == slice(0, 2)
    assert meta.decode.block_ids.tolist() == [3, 1, 0, 2] and not meta.prefills


def test_mixed_step_plans():
    meta = CpuAttentionBackend(SPEC).build_metadata(_batch([1, 5, 1], [3, 5, 9], [[4], [1, 2], [5, 6, 7]]))
    assert not meta.pure_decode and meta.decode.rows.tolist() == [0, 6]  # split by the prefill rows
    assert meta.decode.mask.shape == (2, 1, 1, 9) and meta.decode.mask.sum().item() == 3 + 9
    (prefill,) = meta.prefills
    assert (prefill.start, prefill.end, prefill.block_ids, prefill.mask) == (1, 6, None, None)  # no cache


def test_strided_inputs_match_contiguous_ones():
    """q/k/v sliced out of one fused projection (as a model makes them) give the same output."""
    backend = CpuAttentionBackend(SPEC)
    batch = _batch([1, 5, 3], [3, 5, 9], [[4], [1, 2], [5, 6, 7]])
    qkv = torch.randn(9, (6 + 2 + 2) * 8)  # [T, (Hq + 2 Hkv) * D]
    q, k, v = (t.view(9, -1, 8) for t in qkv.split([48, 16, 16], dim=-1))  # strided views
    outs = []
    for args in ((q, k, v), (q.contiguous(), k.contiguous(), v.contiguous())):
        cache = torch.zeros(backend.kv_cache_shape(8))
        outs.append(backend.forward(*args, cache, backend.build_metadata(batch), 8**-0.5))
    assert not q.is_contiguous() and torch.equal(outs[0], outs[1])
