"""The sparse mixture-of-experts block: a router, the stacked experts and an optional shared expert.

Expert weights live as one stacked tensor per projection (the layout fused_moe takes), built from
the checkpoint's per-expert tensors; each module here names its own checkpoint tensors through
`checkpoint_parts`, so a family whose checkpoint prefix differs from the graph's (Mixtral's
`block_sparse_moe`) needs no renaming table.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokenmill.models.arch_config import ArchConfig
from tokenmill.models.layers import GatedMLP
from tokenmill.ops import OpRegistry
from tokenmill.ops.fused_moe import grouped_experts, route

# (gate, up, down) projection names of one expert in a checkpoint
MIXTRAL_EXPERT_NAMES = ("w1", "w3", "w2")
QWEN_EXPERT_NAMES = ("gate_proj", "up_proj", "down_proj")


class Router(nn.Module):
    """A bias-free [out, H] projection kept dense (not an nn.Linear, so quantization never packs it)."""

    def __init__(self, hidden_size: int, out_features: int, checkpoint_name: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, hidden_size), requires_grad=False)  # [out, H]
        self.checkpoint_name = checkpoint_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, H] -> [T, out]."""
        return F.linear(x, self.weight)

    def checkpoint_parts(self, leaf: str) -> list[tuple[str, tuple[int, ...]]]:
        """The checkpoint tensor this parameter is read from."""
        return [(self.checkpoint_name, tuple(self.weight.shape))]


class ExpertStack(nn.Module):
    """E experts' weights, stacked: gate_up_proj [E*2I, H] (each expert's gate rows, then up rows) and
    down_proj [E*H, I]. Stored flat so the loader's concatenation of per-expert tensors fills them."""

    def __init__(self, num_experts: int, hidden_size: int, inter: int, prefix: str, names: tuple[str, str, str]) -> None:
        super().__init__()
        self.num_experts, self.hidden_size, self.inter = num_experts, hidden_size, inter
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts * 2 * inter, hidden_size), requires_grad=False)
        self.down_proj = nn.Parameter(torch.empty(num_experts * hidden_size, inter), requires_grad=False)
        self.prefix, self.names = prefix, names  # e.g. "model.layers.0.mlp.experts", ("gate_proj", ...)

    def w13(self) -> torch.Tensor:
        """[E, 2I, H] view."""
        return self.gate_up_proj.view(self.num_experts, 2 * self.inter, self.hidden_size)

    def w2(self) -> torch.Tensor:
        """[E, H, I] view."""
        return self.down_proj.view(self.num_experts, self.hidden_size, self.inter)

    def run(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, fused_moe: Any) -> torch.Tensor:
        """x [T, H], routing weights float32 / ids [T, K] -> [T, H] through the platform's fused_moe."""
        return fused_moe(x, self.w13(), self.w2(), weights, ids)

    def pack_with(self, method: Any) -> "PackedExperts":
        """This stack with every expert's two projections packed by a platform LinearMethod."""
        w13, w2 = self.w13(), self.w2()
        return PackedExperts(method, [method.pack(w13[e]) for e in range(self.num_experts)],
                             [method.pack(w2[e]) for e in range(self.num_experts)], self.inter)

    def checkpoint_parts(self, leaf: str) -> list[tuple[str, tuple[int, ...]]]:
        """Per-expert checkpoint tensors, in the order their concatenation along dim 0 stacks them."""
        gate, up, down = self.names
        if leaf == "gate_up_proj":
            shape = (self.inter, self.hidden_size)
            return [(f"{self.prefix}.{e}.{p}.weight", shape) for e in range(self.num_experts) for p in (gate, up)]
        return [(f"{self.prefix}.{e}.{down}.weight", (self.hidden_size, self.inter)) for e in range(self.num_experts)]


class PackedExperts(nn.Module):
    """Experts whose projections a LinearMethod packed (int4/int8, e.g. from a GGUF's Q4/Q8 experts).

    The routed pairs are grouped by expert as in the reference, and each expert's rows go through
    the method's kernels: the same packed matmuls the dense layers use.
    """

    def __init__(self, method: Any, gate_up: list[Any], down: list[Any], inter: int) -> None:
        super().__init__()
        self.method, self.gate_up, self.down, self.inter = method, gate_up, down, inter  # packed per expert
        self._apply = method.apply

    def run(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor, fused_moe: Any) -> torch.Tensor:
        """x [T, H], routing weights float32 / ids [T, K] -> [T, H]; `fused_moe` (dense only) is unused."""
        return grouped_experts(x, weights, ids, len(self.gate_up), self._expert_mlp)

    def _expert_mlp(self, expert: int, rows: torch.Tensor) -> torch.Tensor:  # [n, H] -> [n, H]
        gate, up = self._apply(self.gate_up[expert], rows).chunk(2, dim=-1)  # [n, I] each
        return self._apply(self.down[expert], F.silu(gate) * up)

    def extra_repr(self) -> str:
        return f"num_experts={len(self.gate_up)}, scheme={self.method.scheme}"


class SparseMoeBlock(nn.Module):
    """Route each token to its top-k experts, run them through fused_moe, add the gated shared expert."""

    def __init__(self, arch: ArchConfig, ops: OpRegistry, prefix: str, names: tuple[str, str, str]) -> None:
        super().__init__()
        moe = arch.moe
        self.top_k, self.renormalize = moe.top_k, moe.renormalize
        self.gate = Router(arch.hidden_size, moe.num_experts, f"{prefix}.gate.weight")
        self.experts = ExpertStack(moe.num_experts, arch.hidden_size, moe.expert_intermediate_size,
                                   f"{prefix}.experts", names)
        self.shared_expert = None
        if moe.shared_expert_intermediate_size:
            self.shared_expert = GatedMLP(arch, ops, moe.shared_expert_intermediate_size)
            self.shared_expert_gate = Router(arch.hidden_size, 1, f"{prefix}.shared_expert_gate.weight")
        self._fused_moe = ops.fused_moe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, H] -> [T, H]."""
        weights, ids = route(self.gate(x), self.top_k, self.renormalize)  # float32 [T, K], int64 [T, K]
        out = self.experts.run(x, weights, ids, self._fused_moe)  # [T, H]
        if self.shared_expert is not None:
            out = out + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        return out
