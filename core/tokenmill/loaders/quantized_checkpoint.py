"""QuantizedCheckpoint: a GPTQ, AWQ or FP8 safetensors checkpoint seen as float `*.weight` tensors.

The model is built and checked by transformers names (`...q_proj.weight`), so this wrapper answers
for each quantized linear's weight: its [N, K] shape, its values dequantized to float32, and (for
the packed linear methods) the checkpoint's own codes via `stored()`. The format's side tensors
(qweight/qzeros/scales/g_idx, weight_scale/input_scale) are hidden from the unused-tensor check.
"""

from __future__ import annotations

from typing import Any

import torch

from tokenmill.errors import ModelLoadError
from tokenmill.interfaces import StoredFp8, StoredInt4
from tokenmill.loaders.int4_formats import awq_int4, dequantize_int4, gptq_int4
from tokenmill.loaders.quant_config import QuantFormat

_INT4_PARTS = ("qweight", "qzeros", "scales", "g_idx")
_FP8_PARTS = ("weight_scale", "input_scale", "weight_scale_inv")
QUANT_TYPES = {"gptq": "GPTQ_INT4", "awq": "AWQ_INT4", "fp8": "FP8_E4M3"}  # quant_type() per method
FP8_BLOCKS = "FP8_E4M3_BLOCKS"  # block-wise fp8: no packed scheme takes it, so it loads dequantized


class QuantizedCheckpoint:
    """Wraps a SafetensorsCheckpoint whose quantization_config names `fmt`."""

    def __init__(self, base: Any, fmt: QuantFormat) -> None:
        self.base, self.fmt = base, fmt
        self.source, self.config = base.source, base.config
        self.loadable_dtypes = base.loadable_dtypes | {"F8_E4M3"}
        self._quantized = self._find_quantized()  # "...q_proj.weight" -> "...q_proj"
        hidden = {f"{p}.{part}" for p in self._quantized.values() for part in _INT4_PARTS + _FP8_PARTS}
        self._names = [n for n in base.names() if n not in hidden and n not in self._quantized]
        self._names += list(self._quantized)

    def _find_quantized(self) -> dict[str, str]:
        names = set(self.base.names())
        if self.fmt.method == "fp8":
            scale = ".weight_scale_inv" if self.fmt.block else ".weight_scale"
            prefixes = [n[: -len(scale)] for n in names if n.endswith(scale)]
        else:
            prefixes = [n[: -len(".qweight")] for n in names if n.endswith(".qweight")]
        return {f"{p}.weight": p for p in sorted(prefixes)}

    def names(self) -> list[str]:
        """Every tensor name, with each quantized linear under its `.weight` name."""
        return list(self._names)

    def shape(self, name: str) -> tuple[int, ...] | None:
        """[N, K] for a quantized linear's weight (from its packed shape), else the stored shape."""
        prefix = self._quantized.get(name)
        if prefix is None or self.fmt.method == "fp8":
            return self.base.shape(name)
        rows, cols = self.base.shape(f"{prefix}.qweight")
        return (cols, rows * 8) if self.fmt.method == "gptq" else (cols * 8, rows)

    def dtype(self, name: str) -> str:
        """The float type a quantized weight's scales are stored in (the weight loads as float)."""
        prefix = self._quantized.get(name)
        if prefix is None or self.fmt.method == "fp8":
            return self.base.dtype(name)
        return self.base.dtype(self._part(prefix, "scales"))

    def quant_type(self, name: str) -> str | None:
        """"GPTQ_INT4", "AWQ_INT4" or "FP8_E4M3" for a quantized linear's weight, None for the rest."""
        if name not in self._quantized:
            return None
        return FP8_BLOCKS if self.fmt.block else QUANT_TYPES[self.fmt.method]

    def tensor(self, name: str) -> torch.Tensor:
        """A quantized linear's weight dequantized to float32 [N, K], in the model's input order."""
        if name not in self._quantized:
            return self.base.tensor(name)
        if self.fmt.block:
            return self._fp8_blocks(name)
        stored, perm = self.stored(name)
        if isinstance(stored, StoredFp8):
            return stored.weight.float() * stored.scale.unsqueeze(-1)
        dense = dequantize_int4(stored)
        if perm is None:
            return dense
        out = torch.empty_like(dense)
        out[:, perm] = dense  # stored column j is input perm[j]
        return out

    def stored(self, name: str) -> tuple[StoredInt4 | StoredFp8, torch.Tensor | None]:
        """The checkpoint's own form of a quantized weight, and the input order (act-order) or None."""
        prefix = self._quantized[name]
        if self.fmt.method == "fp8":
            scale = self.base.tensor(self._part(prefix, "weight_scale")).float().reshape(-1)
            weight = self.base.tensor(name)
            if scale.numel() not in (1, weight.shape[0]):
                raise ModelLoadError(f"{self.where(name)}: {prefix}.weight_scale has {scale.numel()} values; FP8 "
                                     f"scales must be per tensor (1) or per output channel ({weight.shape[0]})")
            return StoredFp8(weight, scale), None
        tensors = [self.base.tensor(self._part(prefix, p)) for p in ("qweight", "qzeros", "scales")]
        if self.fmt.method == "awq":
            return awq_int4(*tensors, self.fmt.group_size), None
        g_idx = self.base.tensor(f"{prefix}.g_idx") if self.base.shape(f"{prefix}.g_idx") is not None else None
        return gptq_int4(*tensors, g_idx, self.fmt.group_size, self.fmt.zero_offset)

    def _fp8_blocks(self, name: str) -> torch.Tensor:
        """A block-wise fp8 weight dequantized: w = codes * weight_scale_inv of its [rows, inputs] block."""
        weight = self.base.tensor(name)  # float8_e4m3fn [N, K]
        scales = self.base.tensor(self._part(self._quantized[name], "weight_scale_inv")).float()
        rows, cols = self.fmt.block
        n, k = weight.shape
        if scales.shape != (-(-n // rows), -(-k // cols)):
            raise ModelLoadError(f"{self.where(name)}: {self._quantized[name]}.weight_scale_inv has shape "
                                 f"{tuple(scales.shape)}, but a [{n}, {k}] weight in blocks of {rows}x{cols} needs "
                                 f"{(-(-n // rows), -(-k // cols))}")
        full = scales.repeat_interleave(rows, dim=0)[:n].repeat_interleave(cols, dim=1)[:, :k]  # [N, K]
        return weight.float() * full

    def _part(self, prefix: str, part: str) -> str:
        name = f"{prefix}.{part}"
        if self.base.shape(name) is None:
            raise ModelLoadError(f"checkpoint {self.source} has {prefix}.{'weight' if self.fmt.method == 'fp8' else 'qweight'} "
                                 f"but lacks {name!r}, which {self.fmt.method} needs; the checkpoint is incomplete")
        return name

    def where(self, name: str) -> str:
        """The file holding `name` (a quantized weight's packed tensor), for error messages."""
        prefix = self._quantized.get(name)
        packed = name if prefix is None or self.fmt.method == "fp8" else f"{prefix}.qweight"
        return self.base.where(packed)

    def unmapped(self) -> list[str]:
        """Always empty, as for safetensors."""
        return self.base.unmapped()
