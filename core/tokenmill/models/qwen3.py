"""Qwen3: the Llama graph plus a per-head RMSNorm on q and k before rotary."""

from __future__ import annotations

from typing import Any

import torch

from tokenmill.models.arch_config import ArchConfig
from tokenmill.models.layers import PagedSelfAttention, RMSNorm
from tokenmill.models.llama import LlamaForCausalLM
from tokenmill.ops import OpRegistry


class Qwen3Attention(PagedSelfAttention):
    """Paged self-attention whose q and k heads are RMS-normalised over the head dimension."""

    def __init__(self, arch: ArchConfig, layer_idx: int, ops: OpRegistry, backend: Any) -> None:
        super().__init__(arch, layer_idx, ops, backend)
        self.q_norm = RMSNorm(arch.head_size, arch.rms_norm_eps, ops)
        self.k_norm = RMSNorm(arch.head_size, arch.rms_norm_eps, ops)

    def normalize_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q [T, Hq*D], k [T, Hkv*D] -> the same shapes, each D-wide head normalised."""
        num_tokens = q.shape[0]
        q = self.q_norm(q.reshape(-1, self.head_size)).view(num_tokens, self.q_size)  # via [T*Hq, D]
        k = self.k_norm(k.reshape(-1, self.head_size)).view(num_tokens, self.kv_size)  # via [T*Hkv, D]
        return q, k


class Qwen3ForCausalLM(LlamaForCausalLM):
    """Qwen3 dense models."""

    attention_class = Qwen3Attention
