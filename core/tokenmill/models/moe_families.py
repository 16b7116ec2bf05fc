"""The mixture-of-experts families: Mixtral, Qwen2-MoE and Qwen3-MoE, each a dense graph with MoE blocks."""

from __future__ import annotations

from torch import nn

from tokenmill.models.arch_config import ArchConfig
from tokenmill.models.llama import LlamaForCausalLM
from tokenmill.models.moe import MIXTRAL_EXPERT_NAMES, QWEN_EXPERT_NAMES, SparseMoeBlock
from tokenmill.models.qwen3 import Qwen3ForCausalLM
from tokenmill.ops import OpRegistry


class MixtralForCausalLM(LlamaForCausalLM):
    """Mixtral: every layer's MLP is a top-k (renormalised) MoE; the checkpoint calls it block_sparse_moe."""

    def feed_forward(self, arch: ArchConfig, layer_idx: int, ops: OpRegistry) -> nn.Module | None:
        return SparseMoeBlock(arch, ops, f"model.layers.{layer_idx}.block_sparse_moe", MIXTRAL_EXPERT_NAMES)


def _qwen_feed_forward(arch: ArchConfig, layer_idx: int, ops: OpRegistry) -> nn.Module | None:
    """The MoE block on sparse layers, the dense GatedMLP (None) on mlp_only / skipped ones."""
    if not arch.moe.sparse_layers[layer_idx]:
        return None
    return SparseMoeBlock(arch, ops, f"model.layers.{layer_idx}.mlp", QWEN_EXPERT_NAMES)


class Qwen2MoeForCausalLM(LlamaForCausalLM):
    """Qwen2-MoE (Qwen1.5-MoE): q/k/v bias, routed experts plus a sigmoid-gated shared expert."""

    def feed_forward(self, arch: ArchConfig, layer_idx: int, ops: OpRegistry) -> nn.Module | None:
        return _qwen_feed_forward(arch, layer_idx, ops)


class Qwen3MoeForCausalLM(Qwen3ForCausalLM):
    """Qwen3-MoE: Qwen3 attention (q/k norms), routed experts, no shared expert."""

    def feed_forward(self, arch: ArchConfig, layer_idx: int, ops: OpRegistry) -> nn.Module | None:
        return _qwen_feed_forward(arch, layer_idx, ops)
