"""Gemma 2 and Gemma 3 (text): GeGLU, (1 + w) RMSNorm, four norms per block, scaled embeddings.

Gemma 2 soft-caps attention scores (through the attention spec, so the backend applies it) and
the final logits; Gemma 3 normalises q and k per head instead and gives its windowed (local)
layers their own rope base. Which layers are windowed comes from the config (layer_types, or
the family's pattern: arch_config.FamilyTraits.sliding_pattern).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tokenmill.models.arch_config import ArchConfig
from tokenmill.models.layers import PagedSelfAttention, RMSNorm
from tokenmill.models.llama import DecoderModel, layer_backends
from tokenmill.models.rotary import cos_sin_cache
from tokenmill.ops import OpRegistry


def _rounded(value: float, dtype: torch.dtype) -> float:
    """`value` rounded to `dtype` and back (transformers multiplies by a tensor of the model dtype)."""
    return float(torch.tensor(value, dtype=dtype, device="cpu"))


class GemmaRMSNorm(RMSNorm):
    """RMSNorm scaled by (1 + weight), all in float32 and rounded once, as transformers does.

    Gemma checkpoints store the offset from one. The registry's rms_norm rounds the normalised
    row before the weight multiply, which in bfloat16 drifts from Gemma's reference (and the
    offset weight, ~2, costs a bit of bfloat16 precision), so this norm is plain torch.
    """

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> Any:
        """x [T, H] -> [T, H]; with residual [T, H] -> (norm(x + residual), x + residual)."""
        if residual is not None:
            x = residual = x + residual
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight.float())
        out = xf.to(x.dtype)
        return out if residual is None else (out, residual)


class GemmaMLP(nn.Module):
    """down(gelu_tanh(gate(x)) * up(x)), gate and up merged into one matmul."""

    def __init__(self, arch: ArchConfig, ops: OpRegistry) -> None:
        super().__init__()
        inter = arch.intermediate_size
        self.gate_up_proj = nn.Linear(arch.hidden_size, 2 * inter, bias=False)  # gate rows, then up rows
        self.down_proj = nn.Linear(inter, arch.hidden_size, bias=False)
        self._gelu_and_mul = ops.gelu_tanh_and_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, H] -> [T, H]."""
        return self.down_proj(self._gelu_and_mul(self.gate_up_proj(x)))  # [T, 2I] -> [T, I] -> [T, H]


class GemmaAttention(PagedSelfAttention):
    """Paged attention scaled by query_pre_attn_scalar ** -0.5; Gemma 3 adds (1 + w) q/k norms."""

    def __init__(self, arch: ArchConfig, layer_idx: int, ops: OpRegistry, backend: Any) -> None:
        super().__init__(arch, layer_idx, ops, backend)
        if arch.query_pre_attn_scalar is not None:
            self.scale = arch.query_pre_attn_scalar**-0.5
        self.qk_norm = arch.qk_norm
        if arch.qk_norm:
            self.q_norm = GemmaRMSNorm(arch.head_size, arch.rms_norm_eps, ops)
            self.k_norm = GemmaRMSNorm(arch.head_size, arch.rms_norm_eps, ops)

    def normalize_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q [T, Hq*D], k [T, Hkv*D] -> the same shapes, each D-wide head normalised (Gemma 3)."""
        if not self.qk_norm:
            return q, k
        num_tokens = q.shape[0]
        q = self.q_norm(q.reshape(-1, self.head_size)).view(num_tokens, self.q_size)  # via [T*Hq, D]
        k = self.k_norm(k.reshape(-1, self.head_size)).view(num_tokens, self.kv_size)  # via [T*Hkv, D]
        return q, k


class GemmaDecoderLayer(nn.Module):
    """Norms before and after both the attention and the MLP; the residual adds fuse into the next norm."""

    def __init__(self, arch: ArchConfig, attention: nn.Module, ops: OpRegistry) -> None:
        super().__init__()
        size, eps = arch.hidden_size, arch.rms_norm_eps
        self.input_layernorm = GemmaRMSNorm(size, eps, ops)
        self.self_attn = attention
        self.post_attention_layernorm = GemmaRMSNorm(size, eps, ops)
        self.pre_feedforward_layernorm = GemmaRMSNorm(size, eps, ops)
        self.post_feedforward_layernorm = GemmaRMSNorm(size, eps, ops)
        self.mlp = GemmaMLP(arch, ops)

    def forward(
        self,
        positions: torch.Tensor,  # int64 [T]
        hidden: torch.Tensor,  # [T, H], the previous block's normed MLP output (or the embeddings)
        residual: torch.Tensor | None,  # [T, H]; None at layer 0
        kv_caches: list[torch.Tensor],
        attn_metadata: Any,
        cos_sin: torch.Tensor,  # float32 [P, D], this layer's rope (local or global)
    ) -> tuple[torch.Tensor, torch.Tensor]:  # (normed MLP output [T, H], residual [T, H])
        if residual is None:
            residual, hidden = hidden, self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.post_attention_layernorm(self.self_attn(positions, hidden, kv_caches, attn_metadata, cos_sin))
        hidden, residual = self.pre_feedforward_layernorm(hidden, residual)
        return self.post_feedforward_layernorm(self.mlp(hidden)), residual


class GemmaForCausalLM(nn.Module):
    """Gemma 2 and Gemma 3 text models; the output head is tied to the embeddings unless the config says not."""

    def __init__(self, arch: ArchConfig, ops: OpRegistry, attn_backend: Any, cos_sin: torch.Tensor) -> None:
        super().__init__()
        self.arch = arch
        backends = layer_backends(attn_backend, arch.num_layers)
        layers = [GemmaDecoderLayer(arch, GemmaAttention(arch, i, ops, backends[i]), ops) for i in range(arch.num_layers)]
        self.model = DecoderModel(arch, layers, ops, norm_class=GemmaRMSNorm)
        self.lm_head = nn.Linear(arch.hidden_size, arch.vocab_size, bias=False)
        self.register_buffer("cos_sin_cache", cos_sin, persistent=False)  # float32 [P, D], global layers
        local = cos_sin
        if arch.local_rope_theta is not None:  # Gemma 3: windowed layers rotate with their own base
            with torch.device(cos_sin.device):  # real even while the weights are built on "meta"
                local = cos_sin_cache(arch, cos_sin.shape[0], cos_sin.device, theta=arch.local_rope_theta, scaling={})
        self.register_buffer("local_cos_sin_cache", local, persistent=False)
        self._is_local = [arch.window_of(i) is not None for i in range(arch.num_layers)]
        self._embed_scale = arch.hidden_size**0.5
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the embedding matrix with the output head when the config ties them."""
        if self.arch.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,  # int64 [T]
        positions: torch.Tensor,  # int64 [T]
        kv_caches: list[torch.Tensor],
        attn_metadata: Any,
    ) -> torch.Tensor:  # [T, H], after the final norm
        embeds = self.model.embed_tokens(input_ids)  # [T, H]
        hidden = embeds * _rounded(self._embed_scale, embeds.dtype)  # sqrt(H) in the model dtype, as HF rounds it
        residual = None
        caches = (self.cos_sin_cache, self.local_cos_sin_cache)
        for layer, local in zip(self.model.layers, self._is_local):
            hidden, residual = layer(positions, hidden, residual, kv_caches, attn_metadata, caches[local])
        hidden, _ = self.model.norm(hidden, residual)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, H] -> float32 logits [N, V], soft-capped where the config says (Gemma 2)."""
        logits = self.lm_head(hidden).float()
        cap = self.arch.final_logit_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap
