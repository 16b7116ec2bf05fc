"""The native Q4_1/Q8_0 matmul (quant_matmul.cpp) as torch-facing calls, or None where it cannot build.

One build holds every instruction-set path (AVX-512 VNNI, AVX2, portable); the library reports the
best this CPU runs, and a kernel can be pinned to any path the CPU has (tests compare them all).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from tokenmill_cpu.native_build import load_kernel

_I64, _PTR, _INT = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
ISAS = ("portable", "avx2", "avx512_vnni")  # the library's path numbers, in order
LAYOUTS = ("q4_1", "q8_0")  # the library's layout numbers, in order
_SIGNATURES = {
    "tm_quant_best_isa": ([], _INT),
    "tm_quant_packed_bytes": ([_INT, _INT, _I64, _I64], _I64),
    "tm_quant_repack": ([_INT, _INT, _PTR, _PTR, _I64, _I64], None),
    "tm_quant_matmul": ([_INT, _INT, _PTR, _PTR, _PTR, _I64, _I64, _I64, _INT], None),
    "tm_quant_pack": ([_INT, _PTR, _PTR, _I64, _I64, _INT], None),
}
BLOCK_BYTES = {"q4_1": 20, "q8_0": 34}


@dataclass(frozen=True, slots=True)
class QuantBlocks:
    """A weight [rows, cols] in the byte layout one path reads (GGUF's blocks, or AVX-512 panels)."""

    data: torch.Tensor  # uint8, flat
    rows: int
    cols: int
    isa: str


class QuantMatmul:
    """x [M, K] float32 @ w.T for w in one GGUF block layout, the activations rounded to ~16 bits."""

    def __init__(self, lib: ctypes.CDLL, layout: str, isa: str | None = None) -> None:
        for name, (argtypes, restype) in _SIGNATURES.items():
            getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, restype
        best = lib.tm_quant_best_isa()
        chosen = best if isa is None else ISAS.index(isa)
        if chosen > best:
            raise ValueError(f"this CPU cannot run the {isa} path of the block matmul (best here: {ISAS[best]})")
        self._lib, self._layout, self._isa = lib, LAYOUTS.index(layout), chosen
        self.layout, self.isa = layout, ISAS[chosen]

    def pack(self, blocks: torch.Tensor) -> QuantBlocks:
        """GGUF blocks uint8 [N, K/32, block bytes] -> the layout this kernel's path reads."""
        blocks = blocks.contiguous()
        rows, cols = blocks.shape[0], blocks.shape[1] * 32
        size = self._lib.tm_quant_packed_bytes(self._layout, self._isa, rows, cols)
        data = torch.empty(size, dtype=torch.uint8)
        self._lib.tm_quant_repack(self._layout, self._isa, blocks.data_ptr(), data.data_ptr(), rows, cols)
        return QuantBlocks(data, rows, cols, self.isa)

    def __call__(self, x: torch.Tensor, weight: QuantBlocks) -> torch.Tensor:
        """x float32 [M, K] -> float32 [M, N]."""
        if weight.isa != self.isa:
            raise ValueError(f"weight packed for the {weight.isa} path, kernel runs {self.isa}")
        x = x.contiguous()
        out = torch.empty(x.shape[0], weight.rows, dtype=torch.float32)
        self._lib.tm_quant_matmul(self._layout, self._isa, x.data_ptr(), weight.data.data_ptr(), out.data_ptr(),
                                  x.shape[0], weight.cols, weight.rows, torch.get_num_threads())
        return out


def quant_matmul(layout: str, isa: str | None = None) -> QuantMatmul | None:
    """The kernel for "q4_1" or "q8_0" blocks on path `isa` (default: the best this CPU runs), or None
    (no compiler or a failed build). Raises ValueError for a path this CPU lacks."""
    lib = load_kernel("quant_matmul.cpp")
    return QuantMatmul(lib, layout, isa) if lib is not None else None


def pack_native(layout: str, weight: torch.Tensor) -> torch.Tensor | None:
    """weight [N, K] (K a multiple of 32) -> GGUF blocks uint8 [N, K/32, bytes] in one native pass
    (quant_pack.h: the bytes of quant_blocks.py's torch reference); None without a build."""
    lib = load_kernel("quant_matmul.cpp")
    if lib is None:
        return None
    fn = lib.tm_quant_pack
    fn.argtypes, fn.restype = _SIGNATURES["tm_quant_pack"]
    weight = weight.detach().float().contiguous()
    rows, cols = weight.shape
    out = torch.empty(rows, cols // 32, BLOCK_BYTES[layout], dtype=torch.uint8)
    fn(LAYOUTS.index(layout), weight.data_ptr(), out.data_ptr(), rows, cols, torch.get_num_threads())
    return out


def available_isas() -> tuple[str, ...]:
    """Every path of the block matmul that this CPU can run, slowest first; () without a build."""
    lib = load_kernel("quant_matmul.cpp")
    if lib is None:
        return ()
    lib.tm_quant_best_isa.restype = _INT
    return ISAS[: lib.tm_quant_best_isa() + 1]
