"""Triton paged attention (cache write, decode with splits, prefill with prefixes) vs torch float64."""

from __future__ import annotations

import pytest
import torch

from tokenmill.interfaces import AttentionSpec
from triton_reference import attention_reference, make_case, rel_error, test_device, write_reference

from tokenmill_triton.backend import TritonAttentionBackend
from tokenmill_triton.cache_write import reshape_and_cache
from tokenmill_triton.metadata import fill_static

DEVICE = test_device()
# bf16/fp16 carry ~3 significant digits: the max is a bound on ||out - ref|| / ||ref||
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1.5e-2, torch.float16: 3e-3}


def _run(query_lens, seq_lens, heads, kv_heads, head_size, block_size, dtype, seed=0):
    case = make_case(query_lens, seq_lens, heads, kv_heads, head_size, block_size, dtype, DEVICE, seed)
    backend = TritonAttentionBackend(AttentionSpec(heads, kv_heads, head_size, block_size, dtype), DEVICE)
    metadata = backend.build_metadata(case.batch)
    expected_cache = write_reference(case)
    ref = attention_reference(case, expected_cache, head_size**-0.5)
    out = backend.forward(case.query, case.key, case.value, case.kv_cache, metadata, head_size**-0.5)
    assert out.shape == case.query.shape and out.dtype == dtype
    assert torch.equal(case.kv_cache, expected_cache), "new K/V must land exactly at slot_mapping"
    assert rel_error(out, ref) < TOLERANCE[dtype]
    return metadata


def test_cache_write_skips_padding_slots():
    case = make_case([3], [3], 2, 2, 16, 16, torch.float32, DEVICE)
    before = case.kv_cache.clone()
    padded = case.batch.slot_mapping.clone()
    padded[1] = -1
    reshape_and_cache(case.key, case.value, case.kv_cache, padded)
    flat, old = case.kv_cache.view(2, -1, 2, 16), before.view(2, -1, 2, 16)
    assert torch.equal(flat[0, padded[0]], case.key[0]) and torch.equal(flat[1, padded[2]], case.value[2])
    untouched = case.batch.slot_mapping[1]
    assert torch.equal(flat[:, untouched], old[:, untouched])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_decode_gqa_with_context_splits(dtype):
    metadata = _run([1, 1, 1], [300, 17, 1], 8, 2, 64, 16, dtype)
    assert metadata.num_decodes == 3 and metadata.num_prefills == 0


def test_single_long_decode_is_split_and_reduced():
    metadata = _run([1], [700], 4, 1, 32, 32, torch.float32, seed=3)
    assert metadata.num_splits > 1


@pytest.mark.parametrize("head_size", [64, 128, 256])
def test_head_sizes_mixed_step(head_size):
    _run([1, 5], [40, 5], 4, 2, head_size, 16, torch.bfloat16, seed=head_size)


def test_prefill_with_prefix_hit_and_chunks_spanning_tiles():
    # request 0: 70 new rows (two query tiles) after a 30-token cached prefix;
    # request 1: a fresh prompt; request 2: a decode sharing the step
    _run([70, 9, 1], [100, 9, 65], 4, 4, 32, 16, torch.float32, seed=1)


def test_static_metadata_pads_rows_and_matches_eager():
    case = make_case([1, 1], [20, 47], 4, 2, 32, 16, torch.float32, DEVICE, seed=5)
    backend = TritonAttentionBackend(AttentionSpec(4, 2, 32, 16, torch.float32), DEVICE)
    static = backend.static_metadata(batch_size=4, max_blocks_per_seq=8)
    fill_static(static, backend.build_metadata(case.batch))
    pad = lambda t: torch.cat([t, t.new_zeros((2, *t.shape[1:]))])  # noqa: E731
    out = backend.forward(pad(case.query), pad(case.key), pad(case.value), case.kv_cache.clone(), static, 32**-0.5)
    ref = attention_reference(case, write_reference(case), 32**-0.5)
    assert rel_error(out[:2], ref) < 1e-5
    assert torch.equal(out[2:], torch.zeros_like(out[2:])), "padding rows see no keys"


def test_split_counters_return_to_zero_so_the_next_step_merges_too():
    backend = TritonAttentionBackend(AttentionSpec(4, 2, 32, 16, torch.float32), DEVICE)
    for seed in (0, 1):  # the second step reuses the first one's workspace and counters
        case = make_case([1, 1], [300, 47], 4, 2, 32, 16, torch.float32, DEVICE, seed=seed)
        metadata = backend.build_metadata(case.batch)
        assert metadata.num_splits > 1
        out = backend.forward(case.query, case.key, case.value, case.kv_cache, metadata, 32**-0.5)
        ref = attention_reference(case, write_reference(case), 32**-0.5)
        assert rel_error(out, ref) < 1e-5
        assert not metadata.split_counts.any(), "the merging program must reset its counter"


def _run_windowed(query_lens, seq_lens, window, heads=4, kv_heads=2, head_size=32, block_size=16, seed=0,
                  free_behind=False):
    """The windowed backend against the windowed reference; `free_behind` fills every block wholly
    before a request's first new row's window with NaN, as if the KV manager had freed and reused it."""
    dtype = torch.float32
    case = make_case(query_lens, seq_lens, heads, kv_heads, head_size, block_size, dtype, DEVICE, seed)
    spec = AttentionSpec(heads, kv_heads, head_size, block_size, dtype, sliding_window=window)
    backend = TritonAttentionBackend(spec, DEVICE)
    assert backend.unsupported_reasons(spec) == [] and backend.supports_sliding_window
    expected_cache = write_reference(case)
    ref = attention_reference(case, expected_cache, head_size**-0.5, window)
    assert rel_error(attention_reference(case, expected_cache, head_size**-0.5), ref) > 1e-3  # the window matters
    if free_behind:  # NaN in every block wholly behind the window: one read of them would show
        for r, (q_len, s_len) in enumerate(zip(query_lens, seq_lens)):
            behind = max(0, s_len - q_len - window + 1) // block_size
            case.kv_cache[:, case.batch.block_tables[r, :behind].long()] = float("nan")
    metadata = backend.build_metadata(case.batch)
    out = backend.forward(case.query, case.key, case.value, case.kv_cache, metadata, head_size**-0.5)
    assert rel_error(out, ref) < TOLERANCE[dtype]
    return metadata


def test_windowed_decode_with_splits_skips_blocks_behind_the_window():
    metadata = _run_windowed([1, 1, 1], [300, 17, 40], window=24, seed=7, free_behind=True)
    assert metadata.num_splits > 1


def test_windowed_prefill_chunks_and_prefix_with_freed_blocks():
    # a 70-row chunk after a 50-token prefix (its window starts inside the chunk's first tile),
    # a fresh 90-token prompt (longer than the window), and a decode in the same step
    _run_windowed([70, 90, 1], [120, 90, 65], window=20, seed=2, free_behind=True)


@pytest.mark.parametrize("window", [None, 20])
def test_soft_capped_decode_and_prefill(window):
    """Scores become cap * tanh(s / cap) (Gemma 2), with and without a window; a small cap so it bites."""
    dtype, scale, cap = torch.float32, 32**-0.5, 1.5
    case = make_case([1, 40, 1], [300, 70, 9], 4, 2, 32, 16, dtype, DEVICE, seed=4)
    spec = AttentionSpec(4, 2, 32, 16, dtype, sliding_window=window, logits_soft_cap=cap)
    backend = TritonAttentionBackend(spec, DEVICE)
    assert backend.unsupported_reasons(spec) == [] and backend.supports_logits_soft_cap
    expected_cache = write_reference(case)
    ref = attention_reference(case, expected_cache, scale, window, cap)
    assert rel_error(attention_reference(case, expected_cache, scale, window), ref) > 1e-3  # the cap matters
    out = backend.forward(case.query, case.key, case.value, case.kv_cache, backend.build_metadata(case.batch), scale)
    assert rel_error(out, ref) < TOLERANCE[dtype]


def test_split_counts_are_powers_of_two_and_never_empty():
    from tokenmill_triton.metadata import MAX_SPLITS, DecodeShape, choose_num_splits

    shape = DecodeShape(num_heads=32, num_kv_heads=8, head_size=128, block_size=16, num_sms=132, block_n=64)
    seen = set()
    for decodes in range(1, 300):
        for seq_len in (1, 63, 64, 65, 700, 1024, 5000, 40000):
            splits = choose_num_splits(decodes, seq_len, shape)
            assert splits & (splits - 1) == 0 and 1 <= splits <= MAX_SPLITS
            assert (splits - 1) * shape.block_n < seq_len  # every split has keys to read
            seen.add(splits)
    assert seen == {1, 2, 4, 8, 16, 32}
