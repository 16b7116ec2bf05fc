"""Unpacking GPTQ's and AWQ's 4-bit tensors into StoredInt4 (codes, scales, zeros), and dequantizing it.

The layouts, as AutoGPTQ / GPTQModel and AutoAWQ (GEMM) write them, for a linear of K inputs, N
outputs and groups of G inputs (all packed tensors int32, eight 4-bit fields, field i at bits 4i):
- GPTQ: qweight [K/8, N] packs along K (field i of row r is input 8r + i); qzeros [K/G, N/8] packs
  along N; scales [K/G, N] float16; g_idx [K] int32, the group of each input (act-order checkpoints
  permute it). The v1 format stores every zero point minus one.
- AWQ: qweight [K, N/8] and qzeros [K/G, N/8] pack along N in the interleaved order 0 2 4 6 1 3 5 7
  (field i holds output 8c + ORDER[i]); scales [K/G, N] float16; no g_idx.
Both dequantize as w[k, n] = (q[k, n] - zero[g, n]) * scale[g, n], which StoredInt4 holds as [N, K].
"""

from __future__ import annotations

import torch

from tokenmill.errors import ModelLoadError
from tokenmill.interfaces import StoredInt4

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # field i of a packed AWQ word holds output 8c + AWQ_ORDER[i]
_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)  # field i at bits 4i


def unpack_fields(packed: torch.Tensor) -> torch.Tensor:
    """int32 [R, C] -> uint8 [R, C, 8]: the eight 4-bit fields of each word, field i at bits 4i."""
    return ((packed.to(torch.int32).unsqueeze(-1) >> _SHIFTS) & 15).to(torch.uint8)


def _along_n(packed: torch.Tensor, order: tuple[int, ...] | None) -> torch.Tensor:
    """int32 [R, N/8] packed along N -> uint8 [R, N] in output order."""
    fields = unpack_fields(packed)  # [R, N/8, 8]
    if order is not None:  # field i holds output ORDER[i]: scatter it back there
        fields = fields[..., torch.argsort(torch.tensor(order))]
    return fields.reshape(packed.shape[0], -1)


def gptq_int4(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor | None,
              group_size: int, zero_offset: int) -> tuple[StoredInt4, torch.Tensor | None]:
    """GPTQ tensors -> (StoredInt4 with contiguous groups, the input order it follows or None)."""
    codes = unpack_fields(qweight).permute(0, 2, 1).reshape(-1, qweight.shape[1])  # [K, N]
    cols = codes.shape[0]
    group = cols if group_size == -1 else group_size
    zeros = _along_n(qzeros, None).float() + zero_offset  # [K/G, N]
    perm = None
    if g_idx is not None and not torch.equal(g_idx.long(), torch.arange(cols) // group):
        perm = torch.argsort(g_idx.long(), stable=True)  # inputs sorted by group
        counts = torch.bincount(g_idx.long(), minlength=scales.shape[0])
        if not bool((counts == group).all()):
            raise ModelLoadError(f"GPTQ g_idx does not put {group} inputs in every group (counts "
                                 f"{counts.unique().tolist()}); this checkpoint's act-order layout is not supported")
        codes = codes[perm]
    stored = StoredInt4(codes.t().contiguous(), scales.float().t().contiguous(), zeros.t().contiguous(), group)
    _check(stored, cols)
    return stored, perm


def awq_int4(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> StoredInt4:
    """AWQ GEMM tensors -> StoredInt4 (AWQ groups are always contiguous)."""
    codes = _along_n(qweight, AWQ_ORDER)  # [K, N]
    group = codes.shape[0] if group_size == -1 else group_size
    zeros = _along_n(qzeros, AWQ_ORDER).float()  # [K/G, N]
    stored = StoredInt4(codes.t().contiguous(), scales.float().t().contiguous(), zeros.t().contiguous(), group)
    _check(stored, codes.shape[0])
    return stored


def _check(stored: StoredInt4, cols: int) -> None:
    rows, groups = stored.scales.shape
    if cols % stored.group_size or groups != cols // stored.group_size or stored.zeros.shape != (rows, groups):
        raise ModelLoadError(f"int4 tensors disagree: {cols} inputs in groups of {stored.group_size} need "
                             f"{cols // max(stored.group_size, 1)} scale rows, found scales {tuple(stored.scales.t().shape)} "
                             f"and zeros {tuple(stored.zeros.t().shape)}; the checkpoint does not match its "
                             f"quantization_config group_size")


def dequantize_int4(stored: StoredInt4) -> torch.Tensor:
    """StoredInt4 -> float32 [N, K] in the stored input order."""
    rows, cols = stored.codes.shape
    q = stored.codes.float().view(rows, cols // stored.group_size, stored.group_size)  # [N, K/G, G]
    return ((q - stored.zeros.unsqueeze(-1)) * stored.scales.unsqueeze(-1)).view(rows, cols)
