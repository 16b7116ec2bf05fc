"""Reference GPTQ / AWQ / FP8 packers for the tests, written from the formats' documented layouts.

These are deliberately independent of tokenmill's unpackers: each field is placed by an explicit
loop over the eight 4-bit positions of an int32 word, as AutoGPTQ's and AutoAWQ's docs describe:
- GPTQ: qweight [K/8, N], word r of column n holds inputs 8r..8r+7 (input 8r+i at bits 4i);
  qzeros [K/G, N/8], word c of group g holds outputs 8c..8c+7, each stored minus one in the v1
  format; scales [K/G, N] float16; g_idx [K] the group of every input.
- AWQ (GEMM): qweight [K, N/8] and qzeros [K/G, N/8], word c holds outputs 8c + ORDER[i] at bits 4i,
  ORDER = 0 2 4 6 1 3 5 7; scales [K/G, N] float16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


@dataclass
class Quantized:
    """A weight [N, K] quantized to 4 bits: codes [N, K], scales/zeros [N, groups], g_idx [K]."""

    codes: torch.Tensor
    scales: torch.Tensor  # float16
    zeros: torch.Tensor  # int
    g_idx: torch.Tensor

    def dequantized(self) -> torch.Tensor:
        """float32 [N, K] = (q - zero[g(k)]) * scale[g(k)], straight from the definition."""
        g = self.g_idx.long()
        return (self.codes.float() - self.zeros[:, g].float()) * self.scales[:, g].float()


def quantize(weight: torch.Tensor, group: int, sym: bool, order: torch.Tensor | None = None) -> Quantized:
    """Min-max 4-bit quantization of weight [N, K] in groups of `group` inputs; with an input `order`
    (act-order) group g holds inputs order[g*group : (g+1)*group], as GPTQ's activation order makes
    them (one order per input: the projections that share an input share it)."""
    rows, cols = weight.shape
    order = torch.arange(cols) if order is None else order
    g_idx = torch.empty(cols, dtype=torch.int32)
    g_idx[order] = (torch.arange(cols) // group).to(torch.int32)
    w = weight[:, order].view(rows, cols // group, group)  # group-contiguous view
    lo, hi = w.amin(-1), w.amax(-1)  # [N, G]
    if sym:
        scale = (torch.maximum(lo.abs(), hi.abs()) * 2 / 15).clamp_min(1e-6).half()
        zero = torch.full_like(lo, 8, dtype=torch.int64)
    else:
        scale = ((hi - lo) / 15).clamp_min(1e-6).half()
        zero = torch.round(-lo / scale.float()).clamp(1, 15).long()  # v1 cannot store a zero point of 0
    q = torch.round(w / scale.float()[..., None] + zero[..., None]).clamp(0, 15).long().view(rows, cols)
    codes = torch.empty_like(q)
    codes[:, order] = q
    return Quantized(codes, scale, zero, g_idx)


def _word(fields: list[torch.Tensor]) -> torch.Tensor:
    """Eight int tensors 0..15 -> int32 words with field i at bits 4i (two's complement wrap)."""
    value = torch.zeros_like(fields[0], dtype=torch.int64)
    for i, f in enumerate(fields):
        value |= f.long() << (4 * i)
    return torch.where(value >= 1 << 31, value - (1 << 32), value).to(torch.int32)


def pack_gptq(q: Quantized, v1: bool = True) -> dict[str, torch.Tensor]:
    """GPTQ tensors (without the layer prefix)."""
    intweight = q.codes.t()  # [K, N]
    qweight = _word([intweight[i::8] for i in range(8)])  # [K/8, N]
    zeros = q.zeros.t() - (1 if v1 else 0)  # [G, N]
    qzeros = _word([zeros[:, i::8] & 15 for i in range(8)])  # [G, N/8]
    return {"qweight": qweight, "qzeros": qzeros, "scales": q.scales.t().contiguous(), "g_idx": q.g_idx}


def pack_awq(q: Quantized) -> dict[str, torch.Tensor]:
    """AWQ GEMM tensors (no g_idx: AWQ's groups are contiguous)."""
    intweight, zeros = q.codes.t(), q.zeros.t()  # [K, N], [G, N]
    qweight = _word([intweight[:, o::8] for o in ORDER])
    qzeros = _word([zeros[:, o::8] for o in ORDER])
    return {"qweight": qweight, "qzeros": qzeros, "scales": q.scales.t().contiguous()}


def pack_fp8(weight: torch.Tensor, per_channel: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(FP8 tensors, the float32 weight they dequantize to): e4m3 codes with weight_scale = amax / 448."""
    amax = weight.abs().amax(dim=1, keepdim=True) if per_channel else weight.abs().amax().reshape(1)
    scale = (amax / 448).float()
    codes = (weight / scale).to(torch.float8_e4m3fn)
    stored_scale = scale if per_channel else scale.reshape(())
    return {"weight": codes, "weight_scale": stored_scale}, codes.float() * scale
