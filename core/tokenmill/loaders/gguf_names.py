"""llama.cpp tensor names -> transformers names, from gguf's own tables (gguf.TensorNameMap).

gguf's converter maps many transformers spellings onto one GGUF name ("blk.{bid}.attn_q" is
`self_attn.q_proj` in Llama, `attention.wq` in others). Reading a GGUF we go back the other way,
so each GGUF tensor answers to every `model.*` / `lm_head` spelling gguf lists for it in this
architecture: the model asks by the names it was built with (Qwen2-MoE's router is `mlp.gate`,
Mixtral's `block_sparse_moe.gate`) and finds its tensor under them. One of them, the first gguf
lists, is the tensor's canonical name, which the unused-tensor check reports.

A merged experts tensor ("blk.{bid}.ffn_gate_exps", [E, N, K]) answers per expert, as checkpoints
on disk name them: `mlp.experts.{e}.gate_proj.weight`, `block_sparse_moe.experts.{e}.w1.weight`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf.constants import MODEL_ARCH_NAMES
from gguf.tensor_mapping import get_tensor_name_map

_EXPERT_TAG = "_exps"  # gguf's merged-experts tensors: ffn_gate_exps, ffn_up_exps, ffn_down_exps
_HF_ROOTS = ("model.", "lm_head")  # the spellings of the decoder families tokenmill builds


@dataclass(frozen=True, slots=True)
class TensorRef:
    """Where a transformers name's values are in the file: a GGUF tensor, or one expert of it."""

    gguf_name: str
    expert: int | None = None


def _arch_of(name: str):
    return next(arch for arch, text in MODEL_ARCH_NAMES.items() if text == name)


class GGUFNames:
    """Every transformers spelling of one architecture's GGUF tensors."""

    def __init__(self, gguf_arch: str, num_blocks: int) -> None:
        self._map = get_tensor_name_map(_arch_of(gguf_arch), num_blocks)
        self._spellings: dict[str, list[str]] = {}  # GGUF base name -> transformers bases, gguf's order
        for hf_base, (_, gguf_base) in self._map.mapping.items():
            if hf_base.startswith(_HF_ROOTS) and ".layers.layers." not in hf_base:
                self._spellings.setdefault(gguf_base, []).append(hf_base)

    def aliases(self, gguf_name: str, num_experts: int) -> list[tuple[str, TensorRef]]:
        """[(transformers name, where its values are)] for one GGUF tensor, canonical first; [] when
        gguf knows no transformers spelling for it here."""
        base, dot, suffix = gguf_name.rpartition(".")
        if not dot or suffix not in ("weight", "bias"):
            return []
        spellings = self._spellings.get(base, [])
        if not base.endswith(_EXPERT_TAG):
            return [(f"{hf}.{suffix}", TensorRef(gguf_name)) for hf in spellings]
        out = []
        for e in range(num_experts):
            for hf in spellings:
                head, sep, tail = hf.rpartition(".experts.")
                if sep:  # "...mlp.experts.gate_proj" -> "...mlp.experts.3.gate_proj.weight"
                    out.append((f"{head}.experts.{e}.{tail}.{suffix}", TensorRef(gguf_name, e)))
        return out


def needs_unpermute(hf_name: str) -> bool:
    """True for the q/k projections, whose rows llama.cpp's converter interleaves for llama."""
    return ".self_attn.q_proj." in hf_name or ".self_attn.k_proj." in hf_name
