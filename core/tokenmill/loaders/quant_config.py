"""config.json's quantization_config: which stored format a safetensors checkpoint's weights are in.

transformers, vLLM and the quantizers that write these checkpoints (AutoGPTQ / GPTQModel, AutoAWQ,
llm-compressor's FP8 export) name the format in `quant_method`. tokenmill reads three: 4-bit GPTQ,
4-bit AWQ in its GEMM layout, and FP8 e4m3 with per-tensor, per-channel or block-wise scales
(DeepSeek-V3 / Qwen3-FP8's weight_scale_inv per [128, 128] block). Any other method,
bit width or layout is refused here, naming it and what is supported, before a tensor is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenmill.errors import ModelLoadError

SUPPORTED = ("awq (4-bit, GEMM layout)", "fp8 (e4m3, per-tensor, per-channel or block-wise scales)", "gptq (4-bit)")


@dataclass(frozen=True, slots=True)
class QuantFormat:
    """One checkpoint's stored format."""

    method: str  # "gptq", "awq" or "fp8"
    group_size: int = 0  # int4: inputs per group; -1 = one group per row (all of K); 0 for fp8
    zero_offset: int = 0  # gptq's v1 format stores each zero point minus one: 1 there, else 0
    block: tuple[int, int] | None = None  # fp8 with block-wise scales: (rows, inputs) per scale


def quant_format(config: dict[str, Any], source: str) -> QuantFormat | None:
    """The stored format config.json declares, None for a float checkpoint; unsupported ones raise."""
    qc = config.get("quantization_config")
    if qc is None:
        return None
    if not isinstance(qc, dict) or not isinstance(qc.get("quant_method"), str):
        raise ModelLoadError(f"{source}: config.json's quantization_config has no quant_method; "
                             f"tokenmill reads {', '.join(SUPPORTED)}")
    method = qc["quant_method"].lower()
    if method == "gptq":
        return _gptq(qc, source)
    if method == "awq":
        return _awq(qc, source)
    if method == "fp8":
        return _fp8(qc, source)
    raise _refuse(source, f"quantization method {method!r}")


def _refuse(source: str, what: str) -> ModelLoadError:
    return ModelLoadError(f"{source} is quantized with {what} (config.json quantization_config), which tokenmill "
                          f"cannot load; supported: {', '.join(SUPPORTED)}. Use a checkpoint in one of those, "
                          f"a float one, or a GGUF")


def _group_size(qc: dict[str, Any], source: str, method: str) -> int:
    bits = qc.get("bits", qc.get("w_bit", 4))
    if bits != 4:
        raise _refuse(source, f"{bits}-bit {method}")
    group = int(qc.get("group_size", qc.get("q_group_size", 128)))
    if group != -1 and group <= 0:
        raise ModelLoadError(f"{source}: {method} group_size {group} is not a positive number of inputs (or -1)")
    return group


def _gptq(qc: dict[str, Any], source: str) -> QuantFormat:
    layout = str(qc.get("checkpoint_format", "gptq")).lower()
    if layout not in ("gptq", "gptq_v2"):
        raise _refuse(source, f"gptq in the {layout!r} checkpoint format")
    return QuantFormat("gptq", _group_size(qc, source, "gptq"), zero_offset=1 if layout == "gptq" else 0)


def _awq(qc: dict[str, Any], source: str) -> QuantFormat:
    version = str(qc.get("version", "gemm")).lower()
    if version != "gemm":
        raise _refuse(source, f"awq in its {version!r} layout")
    if qc.get("zero_point", True) is False:
        raise _refuse(source, "awq without zero points")
    return QuantFormat("awq", _group_size(qc, source, "awq"))


def _fp8(qc: dict[str, Any], source: str) -> QuantFormat:
    fmt = str(qc.get("fmt", "e4m3")).lower()
    if fmt != "e4m3":
        raise _refuse(source, f"fp8 in the {fmt!r} format")
    block = qc.get("weight_block_size")
    if block is None:
        return QuantFormat("fp8")
    if not (isinstance(block, (list, tuple)) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block)):
        raise ModelLoadError(f"{source}: fp8 weight_block_size {block!r} is not two positive sizes [rows, inputs]")
    return QuantFormat("fp8", block=(block[0], block[1]))
