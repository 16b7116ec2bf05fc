"""The native paged decode kernel against a float64 reference and the gather + SDPA fallback."""

from __future__ import annotations

import pytest
import torch

from tokenmill.interfaces import AttentionBatch, AttentionSpec
from tokenmill_cpu import native_build, paged_decode
from tokenmill_cpu.attention import CpuAttentionBackend
from tokenmill_cpu.paged_decode import paged_decode_kernel

needs_kernel = pytest.mark.skipif(
    paged_decode_kernel(torch.float32, 64) is None, reason="no C++ compiler: the kernel falls back to torch"
)
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def _decode_batch(seq_lens: list[int], block_size: int, gen: torch.Generator) -> tuple[AttentionBatch, int]:
    """One new token per request, blocks scattered at random over a pool with a few spare blocks."""
    counts = [-(-n // block_size) for n in seq_lens]
    num_blocks = sum(counts) + 3
    order = torch.randperm(num_blocks, generator=gen).tolist()
    tables, offset = [], 0
    for count in counts:
        tables.append(order[offset : offset + count])
        offset += count
    width = max(counts) + 2  # wider than needed, as the runner's padded tables are
    slots = [t[(n - 1) // block_size] * block_size + (n - 1) % block_size for t, n in zip(tables, seq_lens)]
    batch = AttentionBatch(
        query_start_loc=torch.arange(len(seq_lens) + 1, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
        slot_mapping=torch.tensor(slots),
        query_lens_cpu=[1] * len(seq_lens),
        seq_lens_cpu=list(seq_lens),
        max_query_len=1,
        max_seq_len=max(seq_lens),
    )
    return batch, num_blocks


def _reference(query: torch.Tensor, cache: torch.Tensor, batch: AttentionBatch, scale: float) -> torch.Tensor:
    """Per request, dense float64 attention over its blocks: [B, Hq, D]."""
    _, _, block_size, num_kv_heads, head_size = cache.shape
    outs = []
    for b, n in enumerate(batch.seq_lens_cpu):
        blocks = batch.block_tables[b, : -(-n // block_size)].long()
        k, v = (cache[i, blocks].reshape(-1, num_kv_heads, head_size)[:n].double() for i in (0, 1))  # [n, Hkv, D]
        q = query[b].double().view(num_kv_heads, -1, head_size)  # [Hkv, G, D]
        probs = torch.softmax(torch.einsum("hgd,nhd->hgn", q, k) * scale, dim=-1)  # [Hkv, G, n]
        outs.append(torch.einsum("hgn,nhd->hgd", probs, v).reshape(-1, head_size))  # [Hq, D]
    return torch.stack(outs)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_size", "block_size", "seq_lens"),
    [
        (9, 3, 64, 16, [1, 17, 250, 16, 33]),  # SmolLM2's shape, ragged, partial last blocks
        (8, 8, 128, 16, [5, 300]),  # no GQA, wide heads
        (8, 1, 80, 5, [1, 2, 41]),  # all heads on one KV head, D with an 8-float tail, odd blocks
        (4, 2, 8, 1, [7, 3]),  # one-token blocks, the smallest head
    ],
)
def test_kernel_matches_float64_reference(dtype, heads, kv_heads, head_size, block_size, seq_lens):
    gen = torch.Generator().manual_seed(len(seq_lens) + head_size)
    backend = CpuAttentionBackend(AttentionSpec(heads, kv_heads, head_size, block_size, dtype))
    batch, num_blocks = _decode_batch(seq_lens, block_size, gen)
    cache = (torch.randn(backend.kv_cache_shape(num_blocks), generator=gen) * 2).to(dtype)
    query = torch.randn(len(seq_lens), heads, head_size, generator=gen).to(dtype)
    new_kv = torch.randn(2, len(seq_lens), kv_heads, head_size, generator=gen).to(dtype)
    out = backend.forward(query, new_kv[0], new_kv[1], cache, backend.build_metadata(batch), head_size**-0.5)
    assert out.dtype == dtype and out.shape == query.shape
    expected = _reference(query, cache, batch, head_size**-0.5)
    torch.testing.assert_close(out.double(), expected, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])


@needs_kernel
def test_kernel_agrees_with_the_sdpa_fallback_on_strided_queries():
    """Queries, keys and values sliced out of a fused projection; the two decode paths give the same
    rows and leave the same cache (the native one writes the new keys/values inside its call)."""
    spec = AttentionSpec(9, 3, 64, 16, torch.float32)
    gen = torch.Generator().manual_seed(1)
    batch, num_blocks = _decode_batch([3, 64, 129, 200], spec.block_size, gen)
    qkv = torch.randn(4, (9 + 3 + 3) * 64, generator=gen)  # [T, (Hq + 2 Hkv) * D]
    q, k, v = (t.view(4, -1, 64) for t in qkv.split([9 * 64, 3 * 64, 3 * 64], dim=-1))
    outs, caches = [], []
    for native in (True, False):
        backend = CpuAttentionBackend(spec, native=native)
        caches.append(torch.randn(backend.kv_cache_shape(num_blocks), generator=torch.Generator().manual_seed(2)))
        outs.append(backend.forward(q, k, v, caches[-1], backend.build_metadata(batch), 0.125))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    assert torch.equal(caches[0], caches[1])
    written = caches[0].view(2, -1, 3, 64)[:, batch.slot_mapping]  # [2, T, Hkv, D]
    assert torch.equal(written[0], k) and torch.equal(written[1], v)


def test_switching_native_off_keeps_the_torch_fallback(monkeypatch):
    monkeypatch.setenv(native_build.ENV_DISABLE, "0")
    assert native_build.load_kernel("paged_decode.cpp") is None
    assert CpuAttentionBackend(AttentionSpec(4, 2, 64, 16, torch.float32))._kernel is None


def test_heads_off_the_vector_width_use_the_fallback():
    assert paged_decode_kernel(torch.float32, 36) is None


@needs_kernel
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, torch.float16])
def test_a_narrower_cache_under_float32_activations(cache_dtype):
    """float32 queries and new rows over a bf16/fp16 cache: the rows are written converted as torch
    converts them, and attention is over the narrower cache's values."""
    gen = torch.Generator().manual_seed(7)
    heads, kv_heads, head_size, block_size, seq_lens = 9, 3, 64, 16, [1, 17, 250, 33]
    kernel = paged_decode_kernel(torch.float32, cache_dtype, head_size)
    assert kernel.cache_dtype == cache_dtype and kernel.query_dtype == torch.float32
    backend = CpuAttentionBackend(AttentionSpec(heads, kv_heads, head_size, block_size, cache_dtype))
    batch, num_blocks = _decode_batch(seq_lens, block_size, gen)
    metadata = backend.build_metadata(batch)
    cache = (torch.randn(backend.kv_cache_shape(num_blocks), generator=gen) * 2).to(cache_dtype)
    query = torch.randn(len(seq_lens), heads, head_size, generator=gen)
    new_kv = torch.randn(2, len(seq_lens), kv_heads, head_size, generator=gen) * 1e3  # rounding shows
    new_kv[0, 0, 0, :3] = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -0.0])  # bf16 ties round to even
    assert kernel.can_write(new_kv[0], new_kv[1], cache)
    expected_cache = cache.clone()
    expected_cache.view(2, -1, kv_heads, head_size)[:, batch.slot_mapping] = new_kv.to(cache_dtype)
    decode = metadata.decode
    out = kernel(query, cache, decode.block_table, decode.seq_lens, head_size**-0.5,
                 (new_kv[0], new_kv[1], batch.slot_mapping))
    assert torch.equal(cache.view(torch.int16), expected_cache.view(torch.int16))  # bit for bit
    expected = _reference(query, cache, batch, head_size**-0.5)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=2e-5)


@needs_kernel
def test_the_older_two_argument_call_means_the_activations_dtype():
    kernel = paged_decode_kernel(torch.bfloat16, 64)
    assert kernel.cache_dtype == kernel.query_dtype == torch.bfloat16
    assert paged_decode_kernel(torch.float32, torch.bfloat16, 60) is None  # 60 is off the 8-float vectors


@pytest.fixture(params=paged_decode.ISAS)
def pinned_isa(request):
    """Each path of the kernel in turn (paged_decode.cpp's runtime choice, pinned), then the default back."""
    if paged_decode_kernel(torch.float32, 64) is None:
        pytest.skip("no C++ compiler: the kernel falls back to torch")
    if request.param not in paged_decode.available_isas():
        pytest.skip(f"this CPU cannot run the {request.param} path")
    default = paged_decode.use_isa()
    assert paged_decode.use_isa(request.param) == request.param
    yield request.param
    paged_decode.use_isa(default)


PATH_SHAPES = pytest.mark.parametrize(
    ("heads", "kv_heads", "head_size", "block_size", "seq_lens"),
    [
        (9, 3, 64, 16, [1, 15, 16, 17, 250, 33, 64]),  # SmolLM2: partial and whole tiles of 16 keys
        (8, 1, 128, 16, [5, 300]),  # 8 query rows on one KV head (row groups), 4 chunks of 32
        (6, 2, 80, 5, [1, 2, 41, 100]),  # a masked half chunk, blocks that split tiles
        (4, 4, 32, 1, [7, 3, 18]),  # no GQA, one-token blocks, one chunk
        (4, 2, 8, 16, [9, 40]),  # the smallest head: one masked chunk of 8
        (2, 1, 256, 16, [20, 3]),  # wider than the avx512_bf16 path takes: the generic path
    ],
)


@PATH_SHAPES
def test_every_path_on_a_float32_cache_matches_float64(pinned_isa, heads, kv_heads, head_size, block_size, seq_lens):
    gen = torch.Generator().manual_seed(len(seq_lens) * 5 + head_size)
    kernel = paged_decode_kernel(torch.float32, torch.float32, head_size)
    backend = CpuAttentionBackend(AttentionSpec(heads, kv_heads, head_size, block_size, torch.float32))
    batch, num_blocks = _decode_batch(seq_lens, block_size, gen)
    cache = torch.randn(backend.kv_cache_shape(num_blocks), generator=gen) * 2
    query = torch.randn(len(seq_lens), heads, head_size, generator=gen) * 2
    decode = backend.build_metadata(batch).decode
    scale = head_size**-0.5
    out = kernel(query, cache, decode.block_table, decode.seq_lens, scale)
    torch.testing.assert_close(out.double(), _reference(query, cache, batch, scale), atol=2e-5, rtol=2e-5)


@PATH_SHAPES
def test_every_path_on_a_float16_cache_matches_float64(pinned_isa, heads, kv_heads, head_size, block_size, seq_lens):
    """float32 queries over a float16 cache (the CPU's default cache under a float32 model where the
    avx512_bf16 path runs), against float64 attention over the cache's values: every half widens
    exactly, so the bar is the float32 cache's."""
    gen = torch.Generator().manual_seed(len(seq_lens) * 11 + head_size)
    kernel = paged_decode_kernel(torch.float32, torch.float16, head_size)
    backend = CpuAttentionBackend(AttentionSpec(heads, kv_heads, head_size, block_size, torch.float32, torch.float16))
    batch, num_blocks = _decode_batch(seq_lens, block_size, gen)
    cache = (torch.randn(backend.kv_cache_shape(num_blocks), generator=gen) * 2).to(torch.float16)
    query = torch.randn(len(seq_lens), heads, head_size, generator=gen) * 2
    decode = backend.build_metadata(batch).decode
    scale = head_size**-0.5
    out = kernel(query, cache, decode.block_table, decode.seq_lens, scale)
    torch.testing.assert_close(out.double(), _reference(query, cache, batch, scale), atol=2e-5, rtol=2e-5)


@PATH_SHAPES
@pytest.mark.parametrize("query_bits", [8, 16, 24])
def test_every_path_on_a_bf16_cache_matches_float64(pinned_isa, query_bits, heads, kv_heads, head_size,
                                                    block_size, seq_lens):
    """Queries of 8 significant bits (a bf16 model), 16 and 24 (float32), over a bf16 cache, against
    float64 attention over the cache's values: avx512_bf16 takes a float32 query exactly, as one, two
    or three bf16 terms."""
    gen = torch.Generator().manual_seed(len(seq_lens) * 7 + head_size)
    query_dtype = torch.bfloat16 if query_bits == 8 else torch.float32
    kernel = paged_decode_kernel(query_dtype, torch.bfloat16, head_size)
    backend = CpuAttentionBackend(AttentionSpec(heads, kv_heads, head_size, block_size, torch.bfloat16))
    batch, num_blocks = _decode_batch(seq_lens, block_size, gen)
    cache = (torch.randn(backend.kv_cache_shape(num_blocks), generator=gen) * 2).to(torch.bfloat16)
    query = (torch.randn(len(seq_lens), heads, head_size, generator=gen) * 2).to(query_dtype)
    if query_bits == 16:  # drop the low 8 bits of each significand
        query = (query.view(torch.int32) & -256).view(torch.float32)
    decode = backend.build_metadata(batch).decode
    scale = head_size**-0.5  # not a power of two for 80 and 8: the scale cannot be folded into bf16 queries
    out = kernel(query, cache, decode.block_table, decode.seq_lens, scale)
    expected = _reference(query, cache, batch, scale)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_paths_agree_under_a_sliding_window(pinned_isa, dtype):
    """A window that starts inside a block and one wider than some requests: each path against the
    generic one (test_cpu_sliding_window checks that one against float64)."""
    gen = torch.Generator().manual_seed(3)
    kernel = paged_decode_kernel(dtype, dtype, 64)
    backend = CpuAttentionBackend(AttentionSpec(9, 3, 64, 16, dtype))
    batch, num_blocks = _decode_batch([5, 40, 77, 200], 16, gen)
    cache = torch.randn(backend.kv_cache_shape(num_blocks), generator=gen).to(dtype)
    query = torch.randn(4, 9, 64, generator=gen).to(dtype)
    decode = backend.build_metadata(batch).decode
    out = kernel(query, cache, decode.block_table, decode.seq_lens, 0.125, window=37)
    paged_decode.use_isa("generic")
    expected = kernel(query, cache, decode.block_table, decode.seq_lens, 0.125, window=37)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)
    full = kernel(query, cache, decode.block_table, decode.seq_lens, 0.125)
    assert (full - expected).abs().max() > 1e-2  # the window changed the result


def test_pinning_a_path_the_cpu_lacks_is_refused():
    if paged_decode_kernel(torch.float32, 64) is None:
        pytest.skip("no C++ compiler: the kernel falls back to torch")
    with pytest.raises(ValueError, match="cannot run the nonexistent path"):
        paged_decode.use_isa("nonexistent")
    assert paged_decode.use_isa() in paged_decode.available_isas()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("seq_lens", [[40, 7, 129], [33, 1, 200, 16, 17, 90, 64, 5, 48, 120]])
def test_every_path_splits_work_over_threads(pinned_isa, threads, seq_lens):
    """Items per KV head (few requests) and per whole request (B >= 4 threads), dealt to 1 or 2
    threads: each thread's next-item prefetch and its share of the rows are right."""
    gen = torch.Generator().manual_seed(threads * 100 + len(seq_lens))
    kernel = paged_decode_kernel(torch.bfloat16, torch.bfloat16, 64)
    backend = CpuAttentionBackend(AttentionSpec(9, 3, 64, 16, torch.bfloat16))
    batch, num_blocks = _decode_batch(seq_lens, 16, gen)
    cache = torch.randn(backend.kv_cache_shape(num_blocks), generator=gen).to(torch.bfloat16)
    query = torch.randn(len(seq_lens), 9, 64, generator=gen).to(torch.bfloat16)
    decode = backend.build_metadata(batch).decode
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = kernel(query, cache, decode.block_table, decode.seq_lens, 0.125)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(out.double(), _reference(query, cache, batch, 0.125), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize(("cache_dtype", "rows_dtype"), [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                         (torch.float16, torch.float16), (torch.bfloat16, torch.float32),
                                                         (torch.float16, torch.float32)])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_write_only_entry_matches_index_copy(cache_dtype, rows_dtype, threads):
    """A prefill chunk's cache write (300 rows, some strided as the model's v slice is) lands where
    index_copy_ puts it, converted as .to() converts, and touches no other slot."""
    kernel = paged_decode_kernel(rows_dtype, cache_dtype, 64)
    if kernel is None:
        pytest.skip("no C++ compiler: the kernel falls back to torch")
    cache = torch.randn(2, 40, 16, 3, 64).to(cache_dtype)  # [2, N, S, Hkv, D]
    qkv = torch.randn(300, 15 * 64).to(rows_dtype)
    key = qkv[:, 9 * 64 : 12 * 64].contiguous().view(300, 3, 64)
    value = qkv[:, 12 * 64 :].view(300, 3, 64)  # row stride 15 * 64
    slots = torch.randperm(40 * 16)[:300]
    expected = cache.clone()
    flat = expected.view(2, -1, 3, 64)
    flat[0].index_copy_(0, slots, key.to(cache_dtype))
    flat[1].index_copy_(0, slots, value.to(cache_dtype))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert kernel.can_write(key, value, cache)
        kernel.write(key, value, cache, slots)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(cache, expected)
