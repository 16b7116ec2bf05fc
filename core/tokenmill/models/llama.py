"""The Llama family graph: Llama 2/3.x, Mistral, SmolLM2 and Qwen2 (which only adds a q/k/v bias)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tokenmill.models.arch_config import ArchConfig
from tokenmill.models.layers import GatedMLP, PagedSelfAttention, RMSNorm, VocabEmbedding
from tokenmill.ops import OpRegistry


def layer_backends(attn_backend: Any, num_layers: int) -> list[Any]:
    """Each layer's attention backend, from one shared backend or a per-layer list."""
    if isinstance(attn_backend, (list, tuple)):
        if len(attn_backend) != num_layers:
            raise ValueError(f"{len(attn_backend)} attention backends for {num_layers} layers")
        return list(attn_backend)
    return [attn_backend] * num_layers


class DecoderLayer(nn.Module):
    """Pre-norm block; the residual stream is carried separately so each norm can fuse the add."""

    def __init__(self, arch: ArchConfig, attention: nn.Module, ops: OpRegistry, mlp: nn.Module | None = None) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps, ops)
        self.self_attn = attention
        self.post_attention_layernorm = RMSNorm(arch.hidden_size, arch.rms_norm_eps, ops)
        self.mlp = GatedMLP(arch, ops) if mlp is None else mlp  # [T, H] -> [T, H]; an MoE block for MoE families

    def forward(
        self,
        positions: torch.Tensor,  # int64 [T]
        hidden: torch.Tensor,  # [T, H], the previous block's MLP output (or the embeddings)
        residual: torch.Tensor | None,  # [T, H], the stream before that output; None at layer 0
        kv_caches: list[torch.Tensor],  # every layer's cache; the attention uses (and may replace) its own
        attn_metadata: Any,
        cos_sin: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # (MLP output [T, H], residual [T, H])
        if residual is None:
            residual, hidden = hidden, self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden, kv_caches, attn_metadata, cos_sin)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class DecoderModel(nn.Module):
    """Embeddings, the decoder layers and the final norm (transformers' `model.` prefix)."""

    def __init__(self, arch: ArchConfig, layers: list[nn.Module], ops: OpRegistry,
                 norm_class: type[nn.Module] = RMSNorm) -> None:
        """`norm_class`: the final norm's kind (Gemma's (1 + w) norm; RMSNorm otherwise)."""
        super().__init__()
        self.embed_tokens = VocabEmbedding(arch.vocab_size, arch.hidden_size)
        self.layers = nn.ModuleList(layers)
        self.norm = norm_class(arch.hidden_size, arch.rms_norm_eps, ops)


class LlamaForCausalLM(nn.Module):
    """The runnable model: `forward` gives final hidden states, `compute_logits` projects chosen rows."""

    attention_class: type[PagedSelfAttention] = PagedSelfAttention

    def __init__(self, arch: ArchConfig, ops: OpRegistry, attn_backend: Any, cos_sin: torch.Tensor) -> None:
        """`attn_backend`: one backend for every layer, or a list with each layer's (sliding windows)."""
        super().__init__()
        self.arch = arch
        backends = layer_backends(attn_backend, arch.num_layers)
        layers = [
            DecoderLayer(arch, self.attention_class(arch, i, ops, backends[i]), ops, self.feed_forward(arch, i, ops))
            for i in range(arch.num_layers)
        ]
        self.model = DecoderModel(arch, layers, ops)
        self.lm_head = nn.Linear(arch.hidden_size, arch.vocab_size, bias=False)
        self.register_buffer("cos_sin_cache", cos_sin, persistent=False)  # float32 [P, D]
        self.tie_weights()

    def feed_forward(self, arch: ArchConfig, layer_idx: int, ops: OpRegistry) -> nn.Module | None:
        """Layer `layer_idx`'s MLP; None means the dense GatedMLP (MoE families return their block)."""
        return None

    def tie_weights(self) -> None:
        """Share the embedding matrix with the output head when the config ties them."""
        if self.arch.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,  # int64 [T]
        positions: torch.Tensor,  # int64 [T]
        kv_caches: list[torch.Tensor],  # one per layer; a functional backend's updates replace entries
        attn_metadata: Any,  # from the attention backend's build_metadata
    ) -> torch.Tensor:  # [T, H], after the final norm
        hidden = self.model.embed_tokens(input_ids)  # [T, H]
        residual = None
        cos_sin = self.cos_sin_cache
        for layer in self.model.layers:
            hidden, residual = layer(positions, hidden, residual, kv_caches, attn_metadata, cos_sin)
        hidden, _ = self.model.norm(hidden, residual)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, H] -> float32 logits [N, V]."""
        return self.lm_head(hidden).float()
