"""GGUF mixture-of-experts: the stacked ffn_*_exps tensors as per-expert views, and the expert metadata.

llama.cpp stores each layer's experts as one tensor per projection, [E, rows, cols] (GGUF lists
the dims reversed), named by gguf's own table (gguf.TENSOR_NAMES). Each expert's rows are whole
quantization blocks, so expert e is read (and dequantized) from its own slice of the raw data and
the loader never holds a layer's whole stack in float. Mixtral ships under the "llama"
architecture with an expert count; Qwen2-MoE and Qwen3-MoE under their own names.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from gguf import MODEL_TENSOR, TENSOR_NAMES

# GGUF architecture -> the transformers MoE architecture (llama only when it has experts)
MOE_ARCHITECTURES = {"llama": "MixtralForCausalLM", "qwen2moe": "Qwen2MoeForCausalLM",
                     "qwen3moe": "Qwen3MoeForCausalLM"}
_NORMALISED = {"llama": True, "qwen2moe": False, "qwen3moe": True}  # llama.cpp's defaults per architecture
_STACKED = {MODEL_TENSOR.FFN_GATE_EXP: 0, MODEL_TENSOR.FFN_UP_EXP: 1, MODEL_TENSOR.FFN_DOWN_EXP: 2}  # part index
_EXPERT_NAMES = {"mixtral": ("w1", "w3", "w2"), "qwen": ("gate_proj", "up_proj", "down_proj")}
_SINGLE = {MODEL_TENSOR.FFN_GATE_INP: "gate", MODEL_TENSOR.FFN_GATE_SHEXP: "shared_expert.gate_proj",
           MODEL_TENSOR.FFN_UP_SHEXP: "shared_expert.up_proj", MODEL_TENSOR.FFN_DOWN_SHEXP: "shared_expert.down_proj",
           MODEL_TENSOR.FFN_GATE_INP_SHEXP: "shared_expert_gate"}


def _pattern(kind: MODEL_TENSOR) -> re.Pattern:
    return re.compile(re.escape(TENSOR_NAMES[kind]).replace(re.escape("{bid}"), r"(\d+)") + r"\.(weight|bias)$")


_PATTERNS = [(_pattern(k), k) for k in (*_STACKED, *_SINGLE)]


class ExpertSlice:
    """One expert of a stacked GGUF tensor, shaped like a gguf ReaderTensor (name, type, shape, data)."""

    def __init__(self, stacked: Any, expert: int) -> None:
        self.name = f"{stacked.name}[{expert}]"
        self.tensor_type = stacked.tensor_type
        self.shape = stacked.shape[:-1]  # GGUF order: (cols, rows), the expert dim dropped
        self.data = stacked.data[expert]  # this expert's rows of raw blocks (a view of the memory map)


def moe_style(gguf_arch: str, field: Callable[[str], Any]) -> str | None:
    """"mixtral" / "qwen" for a GGUF whose architecture has experts, else None."""
    if gguf_arch not in MOE_ARCHITECTURES or not field(f"{gguf_arch}.expert_count"):
        return None
    return "mixtral" if gguf_arch == "llama" else "qwen"


def expert_tensors(tensor: Any, style: str | None) -> dict[str, Any] | None:
    """transformers name -> tensor (or ExpertSlice) for an MoE tensor; None for any other tensor."""
    if style is None:
        return None
    for pattern, kind in _PATTERNS:
        match = pattern.match(tensor.name)
        if match:
            break
    else:
        return None
    layer, leaf = match.group(1), match.group(2)
    prefix = f"model.layers.{layer}.{'block_sparse_moe' if style == 'mixtral' else 'mlp'}"
    if kind in _SINGLE:
        return {f"{prefix}.{_SINGLE[kind]}.{leaf}": tensor}
    part = _EXPERT_NAMES[style][_STACKED[kind]]
    count = int(tensor.shape[-1])
    return {f"{prefix}.experts.{e}.{part}.{leaf}": ExpertSlice(tensor, e) for e in range(count)}


def moe_config(gguf_arch: str, field: Callable[..., Any]) -> dict[str, Any]:
    """The config.json MoE fields of an MoE GGUF (empty for a dense one)."""
    a = gguf_arch
    if moe_style(a, field) is None:
        return {}
    experts, used = field(f"{a}.expert_count"), field(f"{a}.expert_used_count")
    width = field(f"{a}.expert_feed_forward_length") or field(f"{a}.feed_forward_length")
    cfg = {"architectures": [MOE_ARCHITECTURES[a]], "num_experts_per_tok": used}
    if a == "llama":
        return dict(cfg, num_local_experts=experts, intermediate_size=width)
    return dict(cfg, num_experts=experts, moe_intermediate_size=width,
                intermediate_size=field(f"{a}.feed_forward_length") or width,
                shared_expert_intermediate_size=field(f"{a}.expert_shared_feed_forward_length") or 0,
                norm_topk_prob=bool(field(f"{a}.expert_weights_norm", _NORMALISED[a])))
