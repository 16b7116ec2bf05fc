"""float32 <-> bfloat16 casts of contiguous tensors through casts.cpp, else torch's .to()."""

from __future__ import annotations

import ctypes

import torch

from tokenmill_cpu.native_build import load_kernel

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


class Casts:
    """to_bf16 / to_f32 for contiguous tensors, one native pass each; anything else goes to torch."""

    def __init__(self, lib: ctypes.CDLL | None) -> None:
        self._lib = lib
        if lib is not None:
            for name in ("tm_f32_to_bf16", "tm_bf16_to_f32"):
                getattr(lib, name).argtypes, getattr(lib, name).restype = [_PTR, _PTR, _I64], None

    def to(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """x in `dtype` (x itself when it has it already)."""
        if x.dtype == dtype:
            return x
        if dtype == torch.bfloat16:
            return self.to_bf16(x)
        return self.to_f32(x) if dtype == torch.float32 else x.to(dtype)

    def to_bf16(self, x: torch.Tensor) -> torch.Tensor:
        """float32 x -> bfloat16, rounded to nearest even (torch's rounding)."""
        if self._lib is None or x.dtype != torch.float32 or not x.is_contiguous():
            return x.to(torch.bfloat16)
        out = torch.empty(x.shape, dtype=torch.bfloat16)
        self._lib.tm_f32_to_bf16(x.data_ptr(), out.data_ptr(), x.numel())
        return out

    def to_f32(self, x: torch.Tensor) -> torch.Tensor:
        """bfloat16 x -> float32 (exact)."""
        if self._lib is None or x.dtype != torch.bfloat16 or not x.is_contiguous():
            return x.to(torch.float32)
        out = torch.empty(x.shape, dtype=torch.float32)
        self._lib.tm_bf16_to_f32(x.data_ptr(), out.data_ptr(), x.numel())
        return out


def casts(native: bool = True) -> Casts:
    """The native casts where casts.cpp builds (and `native`), else torch's."""
    return Casts(load_kernel("casts.cpp") if native else None)
