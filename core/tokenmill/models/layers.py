"""Building blocks shared by the decoder families: RMSNorm, the gated MLP and paged self-attention.

Every block takes the op registry at construction and binds the ops it calls, so the hot path is
one attribute load per op and the model never learns which platform supplied them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tokenmill.models.arch_config import ArchConfig
from tokenmill.ops import OpRegistry
from tokenmill.plugin_base import optional


class RMSNorm(nn.Module):
    """RMSNorm through the registry; with a residual it adds first and returns the new residual too."""

    def __init__(self, size: int, eps: float, ops: OpRegistry) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size), requires_grad=False)
        self.eps = eps
        self._norm = ops.rms_norm
        self._add_norm = ops.fused_add_rms_norm

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> Any:
        """x [T, H] -> [T, H]; with residual [T, H] -> (norm(x + residual), x + residual)."""
        if residual is None:
            return self._norm(x, self.weight, self.eps)
        return self._add_norm(x, residual, self.weight, self.eps)


class VocabEmbedding(nn.Module):
    """Token embedding lookup (a plain table, so building it on the meta device costs nothing)."""

    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size), requires_grad=False)  # [V, H]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """int64 [T] -> [T, H]."""
        return nn.functional.embedding(input_ids, self.weight)


class GatedMLP(nn.Module):
    """down(silu(gate(x)) * up(x)), with gate and up merged into one matmul."""

    def __init__(self, arch: ArchConfig, ops: OpRegistry, intermediate_size: int | None = None) -> None:
        super().__init__()
        inter = intermediate_size or arch.intermediate_size  # an MoE's shared expert has its own width
        self.gate_up_proj = nn.Linear(arch.hidden_size, 2 * inter, bias=arch.mlp_bias)  # gate rows, then up rows
        self.down_proj = nn.Linear(inter, arch.hidden_size, bias=arch.mlp_bias)
        self._silu_and_mul = ops.silu_and_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, H] -> [T, H]."""
        return self.down_proj(self._silu_and_mul(self.gate_up_proj(x)))  # [T, 2I] -> [T, I] -> [T, H]


class PagedSelfAttention(nn.Module):
    """Merged q/k/v projection, rotary, the platform's paged attention, output projection."""

    def __init__(self, arch: ArchConfig, layer_idx: int, ops: OpRegistry, backend: Any) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_size = arch.head_size
        self.num_heads, self.num_kv_heads = arch.num_heads, arch.num_kv_heads
        self.q_size, self.kv_size = arch.q_size, arch.kv_size
        self.kv_end = arch.q_size + arch.kv_size  # where v starts in the merged q/k/v projection
        self.scale = arch.head_size**-0.5
        self.qkv_proj = nn.Linear(arch.hidden_size, arch.q_size + 2 * arch.kv_size, bias=arch.qkv_bias)
        self.o_proj = nn.Linear(arch.q_size, arch.hidden_size, bias=arch.o_bias)
        self._rotary = ops.rotary
        self._backend = backend
        self._functional = bool(optional(backend, "functional_cache", False))  # see AttentionBackend.forward

    def forward(
        self,
        positions: torch.Tensor,  # int64 [T]
        hidden: torch.Tensor,  # [T, H]
        kv_caches: list[torch.Tensor],  # every layer's cache, shaped by the backend; ours is [layer_idx]
        attn_metadata: Any,
        cos_sin: torch.Tensor,  # float32 [P, D]
    ) -> torch.Tensor:  # [T, H]
        num_tokens = hidden.shape[0]
        qkv = self.qkv_proj(hidden)  # [T, (Hq + 2 Hkv) * D]
        q, k, v = qkv[:, : self.q_size], qkv[:, self.q_size : self.kv_end], qkv[:, self.kv_end :]  # slices: cheaper than split
        q, k = self.normalize_qk(q, k)
        q, k = self._rotary(positions, q, k, cos_sin, self.head_size)
        out = self._backend.forward(
            q.view(num_tokens, self.num_heads, self.head_size),
            k.view(num_tokens, self.num_kv_heads, self.head_size),
            v.view(num_tokens, self.num_kv_heads, self.head_size),
            kv_caches[self.layer_idx],
            attn_metadata,
            self.scale,
        )  # [T, Hq, D], or (that, the updated cache) from a functional backend
        if self._functional:
            out, kv_caches[self.layer_idx] = out
        return self.o_proj(out.reshape(num_tokens, self.q_size))

    def normalize_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook for families that normalise q and k before rotary; plain attention leaves them."""
        return q, k
