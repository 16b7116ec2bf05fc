"""The native layer ops (layer_ops.cpp) as op-registry overrides, falling back where they can't run.

Each override takes the native path for float32 or bfloat16 rows whose size suits its 8-lane
vectors (weights and residuals in the same dtype), and hands anything else to the op it replaces
(the plugin's fewer-op torch versions, or the core's references).
The library picks its path at run time: "avx512" (16 lanes, layer_ops_avx512.h) on CPUs with
AVX-512 F/BW/VL/DQ, else "generic" (8-lane vectors); `use_isa` pins one (tests, benchmarks).
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable

import torch

from tokenmill_cpu.native_build import load_kernel

_I64, _PTR, _F32, _INT = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
ISAS = ("generic", "avx512")  # the library's path numbers, in order
_SUFFIXES = {torch.float32: "", torch.bfloat16: "_bf16"}  # row dtype -> the library's entry point suffix
_SIGNATURES = {
    "tm_rms_norm": [_PTR, _I64, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _F32, _INT],
    "tm_silu_and_mul": [_PTR, _I64, _PTR, _I64, _I64, _INT],
    "tm_rotary": [_PTR, _PTR, _I64, _PTR, _I64, _PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _INT],
}


def _native(x: torch.Tensor, width: int = 8) -> bool:
    """Whether x [T, *] can go native: float32 or bf16 with unit column stride, `width` a multiple of 8."""
    return x.dtype in _SUFFIXES and x.dim() == 2 and x.stride(-1) == 1 and width % 8 == 0


class LayerOps:
    """rms_norm, fused_add_rms_norm, silu_and_mul and rotary over one loaded library."""

    def __init__(self, lib: ctypes.CDLL, fallback: dict[str, Callable[..., Any]]) -> None:
        self._fns: dict[tuple[str, torch.dtype], Any] = {}  # (op, row dtype) -> the entry point
        for name, argtypes in _SIGNATURES.items():
            for dtype, suffix in _SUFFIXES.items():
                fn = getattr(lib, name + suffix)
                fn.argtypes, fn.restype = argtypes, None
                self._fns[name, dtype] = fn
        self._fallback = fallback

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """x [T, H], weight [H] -> [T, H]."""
        if not (_native(x, x.shape[-1]) and weight.dtype == x.dtype and weight.is_contiguous()):
            return self._fallback["rms_norm"](x, weight, eps)
        out = torch.empty(x.shape, dtype=x.dtype)
        self._fns["tm_rms_norm", x.dtype](x.data_ptr(), x.stride(0), None, weight.data_ptr(), out.data_ptr(), None,
                                          x.shape[0], x.shape[1], eps, torch.get_num_threads())
        return out

    def fused_add_rms_norm(self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                           eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + residual) -> (rms_norm of the sum [T, H], the sum [T, H])."""
        usable = _native(x, x.shape[-1]) and residual.dtype == x.dtype and residual.is_contiguous()
        if not (usable and weight.dtype == x.dtype and weight.is_contiguous()):
            return self._fallback["fused_add_rms_norm"](x, residual, weight, eps)
        out, summed = torch.empty(x.shape, dtype=x.dtype), torch.empty(x.shape, dtype=x.dtype)
        self._fns["tm_rms_norm", x.dtype](x.data_ptr(), x.stride(0), residual.data_ptr(), weight.data_ptr(),
                                          out.data_ptr(), summed.data_ptr(), x.shape[0], x.shape[1], eps,
                                          torch.get_num_threads())
        return out, summed

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, 2I] (gate then up) -> silu(gate) * up [T, I]."""
        inter = x.shape[-1] // 2
        if not _native(x, inter):
            return self._fallback["silu_and_mul"](x)
        out = torch.empty(x.shape[0], inter, dtype=x.dtype)
        self._fns["tm_silu_and_mul", x.dtype](x.data_ptr(), x.stride(0), out.data_ptr(), x.shape[0], inter,
                                              torch.get_num_threads())
        return out

    def rotary(self, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor,
               cos_sin_cache: torch.Tensor, head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """q [T, Hq*D], k [T, Hkv*D] -> both rotated by position (NeoX), as new tensors."""
        usable = (_native(query) and key.dtype == query.dtype and _native(key) and head_size % 2 == 0
                  and positions.dtype == torch.int64)
        if not (usable and cos_sin_cache.dtype == torch.float32 and cos_sin_cache.is_contiguous()
                and positions.is_contiguous()):
            return self._fallback["rotary"](positions, query, key, cos_sin_cache, head_size)
        q_out = torch.empty(query.shape, dtype=query.dtype)
        k_out = torch.empty(key.shape, dtype=key.dtype)
        self._fns["tm_rotary", query.dtype](positions.data_ptr(), query.data_ptr(), query.stride(0), key.data_ptr(),
                                            key.stride(0), cos_sin_cache.data_ptr(), q_out.data_ptr(),
                                            k_out.data_ptr(), query.shape[0], query.shape[1] // head_size,
                                            key.shape[1] // head_size, head_size, torch.get_num_threads())
        return q_out, k_out

    def overrides(self) -> dict[str, Callable[..., Any]]:
        return {name: getattr(self, name) for name in ("rms_norm", "fused_add_rms_norm", "silu_and_mul", "rotary")}


def layer_ops(fallback: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Native overrides over `fallback` (op name -> the op each replaces), or {} where none can build."""
    lib = load_kernel("layer_ops.cpp")
    return LayerOps(lib, fallback).overrides() if lib is not None else {}


def available_isas() -> tuple[str, ...]:
    """The library's paths this CPU runs, slowest first (empty without the library)."""
    lib = load_kernel("layer_ops.cpp")
    return () if lib is None else ISAS[: lib.tm_layer_ops_best_isa() + 1]


def use_isa(isa: str | None = None) -> str:
    """Pins the layer ops' path to `isa` for this process (None: only ask) and returns the path in use;
    for tests and benchmarks. A path this CPU cannot run raises ValueError."""
    lib = load_kernel("layer_ops.cpp")
    if lib is None:
        raise RuntimeError("the native layer ops are not available")
    if isa is not None and isa not in available_isas():
        raise ValueError(f"this CPU cannot run the {isa} path of the layer ops (it runs {available_isas()})")
    return ISAS[lib.tm_layer_ops_use_isa(-1 if isa is None else ISAS.index(isa))]
