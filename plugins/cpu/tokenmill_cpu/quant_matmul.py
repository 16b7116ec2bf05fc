"""The native Q4_1/Q8_0 matmul (quant_matmul.cpp) as torch-facing calls, or None where it cannot build."""

from __future__ import annotations

import ctypes

import torch

from tokenmill_cpu.native_build import load_kernel

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_ARGTYPES = [_PTR, _PTR, _PTR, _I64, _I64, _I64, ctypes.c_int]
_ENTRY_POINTS = {"q4_1": "tm_matmul_q4_1", "q8_0": "tm_matmul_q8_0"}


class QuantMatmul:
    """x [M, K] float32 @ w.T for w in one GGUF block layout, the activations rounded to ~16 bits."""

    def __init__(self, lib: ctypes.CDLL, layout: str) -> None:
        self._fn = getattr(lib, _ENTRY_POINTS[layout])
        self._fn.argtypes = _ARGTYPES
        self._fn.restype = None

    def __call__(
        self,
        x: torch.Tensor,  # float32 [M, K]
        blocks: torch.Tensor,  # uint8 [N, K/32, block bytes], contiguous
    ) -> torch.Tensor:  # float32 [M, N]
        x = x.contiguous()
        rows, cols = x.shape
        out = torch.empty(rows, blocks.shape[0], dtype=torch.float32)
        self._fn(x.data_ptr(), blocks.data_ptr(), out.data_ptr(), rows, cols, blocks.shape[0],
                 torch.get_num_threads())
        return out


def quant_matmul(layout: str, portable: bool = False) -> QuantMatmul | None:
    """The kernel for "q4_1" or "q8_0" blocks, or None (no compiler or a failed build).

    `portable` builds the plain-C++ variant that CPUs without AVX2 run (tests compare the two).
    """
    lib = load_kernel("quant_matmul.cpp", defines=("TM_PORTABLE",) if portable else ())
    return QuantMatmul(lib, layout) if lib is not None else None
