"""The native paged decode kernel (paged_decode.cpp) as a torch-facing call, or None where it cannot build."""

from __future__ import annotations

import ctypes

import torch

from tokenmill_cpu.native_build import load_kernel

_ENTRY_POINTS = {
    torch.float32: "tm_paged_decode_f32",
    torch.bfloat16: "tm_paged_decode_bf16",
    torch.float16: "tm_paged_decode_f16",
}
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_ARGTYPES = [_PTR] * 3 + [_I64] * 3 + [_PTR] * 3 + [_I64] * 6 + [ctypes.c_float, ctypes.c_int]  # cache, shapes
_ARGTYPES += [_PTR] * 2 + [_I64] * 2 + [_PTR]  # new keys/values, their row strides, their slots


class PagedDecodeKernel:
    """Decode attention straight over the paged cache: each request's K/V is read once, never copied."""

    def __init__(self, lib: ctypes.CDLL, dtype: torch.dtype) -> None:
        self._fn = getattr(lib, _ENTRY_POINTS[dtype])
        self._fn.argtypes = _ARGTYPES
        self._fn.restype = None

    def __call__(
        self,
        query: torch.Tensor,  # [B, Hq, D], any float dtype
        kv_cache: torch.Tensor,  # [2, N, S, Hkv, D] with D contiguous, the dtype this kernel was made for
        block_tables: torch.Tensor,  # int64 [B, W] contiguous, W >= ceil(max seq_len / S)
        seq_lens: torch.Tensor,  # int64 [B], each >= 1
        scale: float,
        new_kv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:  # [B, Hq, D] float32
        """With new_kv = (key [B, Hkv, D], value [B, Hkv, D], slots int64 [B]), each of the cache's dtype
        with D and Hkv contiguous, those rows are written into the cache first."""
        num_reqs, num_heads, head_size = query.shape
        _, _, block_size, num_kv_heads, _ = kv_cache.shape
        _, block_stride, row_stride, head_stride, _ = kv_cache.stride()
        q = query.to(torch.float32).contiguous()  # [B, Hq, D]
        out = torch.empty_like(q)
        key, value, slots = new_kv if new_kv is not None else (q, q, None)
        self._fn(
            q.data_ptr(), kv_cache[0].data_ptr(), kv_cache[1].data_ptr(), block_stride, head_stride, row_stride,
            block_tables.data_ptr(), seq_lens.data_ptr(), out.data_ptr(), num_reqs, num_heads, num_kv_heads,
            head_size, block_size, block_tables.shape[1], scale, torch.get_num_threads(),
            key.data_ptr(), value.data_ptr(), key.stride(0), value.stride(0),
            None if slots is None else slots.data_ptr(),
        )  # fmt: skip
        return out

    @staticmethod
    def can_write(key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor) -> bool:
        """Whether new rows key/value [B, Hkv, D] can be written by the kernel (dtype and inner layout)."""
        return all(t.dtype == kv_cache.dtype and t.stride(2) == 1 and t.stride(1) == t.shape[2] for t in (key, value))


def paged_decode_kernel(dtype: torch.dtype, head_size: int) -> PagedDecodeKernel | None:
    """The kernel for caches of `dtype`, or None (no compiler, build failed, or an unsupported shape)."""
    if dtype not in _ENTRY_POINTS or head_size % 8:  # the kernel works in 8-float vectors
        return None
    lib = load_kernel("paged_decode.cpp")
    return PagedDecodeKernel(lib, dtype) if lib is not None else None
