"""The native paged decode kernel (paged_decode.cpp) as a torch-facing call, or None where it cannot build.

The cache dtype may differ from the activations' (a bfloat16 cache under a float32 model halves the
KV bytes a decode step reads): queries are taken in any float dtype, and new keys/values in the
cache's dtype or in float32, which the kernel converts as it writes them.
The library picks its path at run time: "avx512_bf16" (paged_decode_avx512.h) for bfloat16, float32
and float16 caches with heads up to 128 on a CPU with AVX-512 BF16, "generic" for everything else;
`use_isa` pins one (tests, benchmarks).
"""

from __future__ import annotations

import ctypes

import torch

from tokenmill_cpu.native_build import load_kernel

_ENTRY_POINTS = {  # (cache dtype, new rows' dtype) -> entry point
    (torch.float32, torch.float32): "tm_paged_decode_f32",
    (torch.bfloat16, torch.bfloat16): "tm_paged_decode_bf16",
    (torch.float16, torch.float16): "tm_paged_decode_f16",
    (torch.bfloat16, torch.float32): "tm_paged_decode_bf16_from_f32",
    (torch.float16, torch.float32): "tm_paged_decode_f16_from_f32",
}
CACHE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ISAS = ("generic", "avx512_bf16")  # the library's path numbers, in order (avx512_bf16: bf16/f32/f16 caches)
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_ARGTYPES = [_PTR] * 3 + [_I64] * 3 + [_PTR] * 3 + [_I64] * 6 + [ctypes.c_float, ctypes.c_int]  # cache, shapes
_ARGTYPES += [_PTR] * 2 + [_I64] * 2 + [_PTR]  # new keys/values, their row strides, their slots
_ARGTYPES += [_I64]  # the sliding window (0: none)
_WRITE_ARGTYPES = [_PTR] * 2 + [_I64] * 7 + [_PTR] * 2 + [_I64] * 2 + [_PTR, ctypes.c_int]  # tm_paged_write_*


class PagedDecodeKernel:
    """Decode attention straight over the paged cache: each request's K/V is read once, never copied."""

    def __init__(self, lib: ctypes.CDLL, cache_dtype: torch.dtype, query_dtype: torch.dtype | None = None) -> None:
        self.cache_dtype, self.query_dtype = cache_dtype, query_dtype or cache_dtype
        self._fns, self._writes = {}, {}  # new rows' dtype -> the decode entry point, its write-only twin
        for (cache, rows), name in _ENTRY_POINTS.items():
            if cache == cache_dtype:
                self._fns[rows] = getattr(lib, name)
                self._fns[rows].argtypes, self._fns[rows].restype = _ARGTYPES, None
                self._writes[rows] = getattr(lib, name.replace("_decode_", "_write_"))
                self._writes[rows].argtypes, self._writes[rows].restype = _WRITE_ARGTYPES, None

    def __call__(
        self,
        query: torch.Tensor,  # [B, Hq, D], any float dtype
        kv_cache: torch.Tensor,  # [2, N, S, Hkv, D] with D contiguous, of this kernel's cache dtype
        block_tables: torch.Tensor,  # int64 [B, W] contiguous, W >= ceil(max seq_len / S)
        seq_lens: torch.Tensor,  # int64 [B], each >= 1
        scale: float,
        new_kv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        window: int | None = None,
    ) -> torch.Tensor:  # [B, Hq, D] float32
        """`window` W: each request attends only its last W keys (earlier blocks are never read). With new_kv = (key [B, Hkv, D], value [B, Hkv, D], slots int64 [B]), key and value of the cache's
        dtype or float32 (converted) with D and Hkv contiguous, those rows are written into the cache first."""
        if kv_cache.dtype != self.cache_dtype:
            raise ValueError(f"kernel built for a {self.cache_dtype} cache, got {kv_cache.dtype}")
        num_reqs, num_heads, head_size = query.shape
        _, _, block_size, num_kv_heads, _ = kv_cache.shape
        _, block_stride, row_stride, head_stride, _ = kv_cache.stride()
        q = query.to(torch.float32).contiguous()  # [B, Hq, D]
        out = torch.empty_like(q)
        key, value, slots = new_kv if new_kv is not None else (q, q, None)
        self._fns[key.dtype if new_kv is not None else self.cache_dtype](
            q.data_ptr(), kv_cache[0].data_ptr(), kv_cache[1].data_ptr(), block_stride, head_stride, row_stride,
            block_tables.data_ptr(), seq_lens.data_ptr(), out.data_ptr(), num_reqs, num_heads, num_kv_heads,
            head_size, block_size, block_tables.shape[1], scale, torch.get_num_threads(),
            key.data_ptr(), value.data_ptr(), key.stride(0), value.stride(0),
            None if slots is None else slots.data_ptr(), window or 0,
        )  # fmt: skip
        return out

    def write(self, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor, slots: torch.Tensor) -> None:
        """key, value [T, Hkv, D] (as can_write takes them) into the cache rows at slots (int64 [T], contiguous)."""
        _, _, block_size, num_kv_heads, head_size = kv_cache.shape
        _, block_stride, row_stride, head_stride, _ = kv_cache.stride()
        self._writes[key.dtype](kv_cache[0].data_ptr(), kv_cache[1].data_ptr(), block_stride, head_stride, row_stride,
                                key.shape[0], num_kv_heads, head_size, block_size, key.data_ptr(), value.data_ptr(),
                                key.stride(0), value.stride(0), slots.data_ptr(), torch.get_num_threads())

    @staticmethod
    def can_write(key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor) -> bool:
        """Whether new rows key/value [B, Hkv, D] can be written by the kernel (dtype and inner layout)."""
        return all((kv_cache.dtype, t.dtype) in _ENTRY_POINTS and key.dtype == value.dtype and t.stride(2) == 1
                   and t.stride(1) == t.shape[2] for t in (key, value))


def paged_decode_kernel(query_dtype: torch.dtype, cache_dtype: torch.dtype | int,
                        head_size: int | None = None) -> PagedDecodeKernel | None:
    """The kernel for `query_dtype` activations over a `cache_dtype` cache, or None (no compiler, a
    failed build, or an unsupported shape). The older call paged_decode_kernel(dtype, head_size)
    means a cache of the activations' dtype."""
    if head_size is None:  # paged_decode_kernel(dtype, head_size)
        cache_dtype, head_size = query_dtype, int(cache_dtype)
    if cache_dtype not in CACHE_DTYPES or query_dtype not in CACHE_DTYPES or head_size % 8:  # 8-float vectors
        return None
    lib = load_kernel("paged_decode.cpp")
    return PagedDecodeKernel(lib, cache_dtype, query_dtype) if lib is not None else None


def available_isas() -> tuple[str, ...]:
    """The kernel's paths this CPU runs, slowest first (empty without the kernel)."""
    lib = load_kernel("paged_decode.cpp")
    return () if lib is None else ISAS[: lib.tm_paged_decode_best_isa() + 1]


def use_isa(isa: str | None = None) -> str:
    """Pins the kernel's path to `isa` for this process (None: only ask) and returns the path in use;
    for tests and benchmarks. A path this CPU cannot run raises ValueError."""
    lib = load_kernel("paged_decode.cpp")
    if lib is None:
        raise RuntimeError("the native paged decode kernel is not available")
    if isa is not None and isa not in available_isas():
        raise ValueError(f"this CPU cannot run the {isa} path of paged decode (it runs {available_isas()})")
    return ISAS[lib.tm_paged_decode_use_isa(-1 if isa is None else ISAS.index(isa))]

