"""Random fused_moe cases with ragged expert loads (some experts empty) and a float64 per-pair oracle."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class MoeCase:
    """One fused_moe call's inputs."""

    x: torch.Tensor  # [T, H]
    w13: torch.Tensor  # [E, 2I, H]
    w2: torch.Tensor  # [E, H, I]
    topk_weights: torch.Tensor  # float32 [T, K]
    topk_ids: torch.Tensor  # int64 [T, K], distinct per row

    def counts(self) -> list[int]:
        """Tokens routed to each expert."""
        return torch.bincount(self.topk_ids.reshape(-1).cpu(), minlength=self.w13.shape[0]).tolist()


def make_moe_case(num_tokens: int, num_experts: int, hidden: int, inter: int, top_k: int, dtype: torch.dtype,
                  device: torch.device | str = "cpu", seed: int = 0, num_empty: int = 2) -> MoeCase:
    """Routing skewed towards low expert ids (ragged loads); the last `num_empty` experts get no tokens."""
    gen = torch.Generator().manual_seed(seed)
    skew = -torch.arange(num_experts, dtype=torch.float32) / num_experts  # [E]: earlier experts likelier
    skew[num_experts - num_empty :] = float("-inf")
    scores = torch.rand(num_tokens, num_experts, generator=gen) + 2 * skew  # [T, E]
    ids = scores.topk(top_k, dim=-1).indices  # [T, K]
    weights = torch.rand(num_tokens, top_k, generator=gen).softmax(dim=-1)
    scale_in, scale_mid = hidden**-0.5, inter**-0.5  # outputs of order 1 for inputs of order 1

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    return MoeCase(rand(num_tokens, hidden), rand(num_experts, 2 * inter, hidden, scale=scale_in),
                   rand(num_experts, hidden, inter, scale=scale_mid), weights.to(device), ids.to(device))


def moe_oracle(case: MoeCase) -> torch.Tensor:
    """float64 [T, H]: each (token, slot) pair's expert MLP computed on its own, then weighted and summed."""
    x, w13, w2 = case.x.double().cpu(), case.w13.double().cpu(), case.w2.double().cpu()
    ids, weights = case.topk_ids.cpu(), case.topk_weights.double().cpu()
    h = torch.einsum("th,tkoh->tko", x, w13[ids])  # [T, K, 2I]
    gate, up = h.chunk(2, dim=-1)
    out = torch.einsum("tki,tkhi->tkh", F.silu(gate) * up, w2[ids])  # [T, K, H]
    return (out * weights.unsqueeze(-1)).sum(dim=1)
