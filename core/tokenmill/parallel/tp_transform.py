"""The tensor-parallel transform of a built model: shard its weights, then wire in the collectives.

Two phases, because packing a linear layer (int4/int8) drops its dense weight: `shard_model`
slices the dense weights in place before the loader packs them (module names and types stay, so
the packing plan still applies), and `wire_collectives` wraps the packed or dense result with the
modules of tp_layers. The model files never learn about ranks.

- q/k/v (merged) and gate/up (merged) are column-parallel: each rank keeps its heads' rows and
  its slice of the MLP width, and their outputs stay local.
- o_proj and down_proj are row-parallel: each rank keeps the matching input columns, and the
  partial outputs are all-reduced.
- The embedding and the output head are split by vocabulary rows (padded to equal shards): the
  lookups are all-reduced and the logits all-gathered.
- Mixture-of-experts blocks (models/moe.py) split every expert's intermediate dimension the same
  way (gate/up rows, down columns); the router stays whole on every rank, and the routed experts'
  partial sums are all-reduced. A shared expert is a GatedMLP and splits as one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tokenmill.errors import TokenmillError
from tokenmill.models.layers import GatedMLP, PagedSelfAttention, VocabEmbedding
from tokenmill.models.moe import ExpertStack, SparseMoeBlock
from tokenmill.parallel.tp_layers import AllReducedExperts, GatheredHead, RowParallel, VocabParallelEmbedding
from tokenmill.parallel.tp_plan import TPPlan
from tokenmill.plugin_base import optional


def shard_model(net: nn.Module, plan: TPPlan, attn_backend: Any) -> None:
    """Slice every weight of `net` to `plan.rank`'s share, in place; `attn_backend` is the rank's backend.

    A linear layer outside the blocks this transform knows raises TokenmillError naming it, so
    a new family never runs half-sharded.
    """
    covered: set[int] = set()
    for module in list(net.modules()):
        if isinstance(module, PagedSelfAttention):
            _shard_attention(module, plan, attn_backend)
            covered |= {id(module.qkv_proj), id(module.o_proj)}
        elif isinstance(module, GatedMLP):
            _shard_mlp(module, plan)
            covered |= {id(module.gate_up_proj), id(module.down_proj)}
        elif isinstance(module, ExpertStack):
            _shard_experts(module, plan)
    embeddings = [m for m in net.modules() if isinstance(m, VocabEmbedding)]
    tied = [e for e in embeddings if e.weight is net.lm_head.weight]
    for embedding in embeddings:
        embedding.weight = _param(_vocab_rows(embedding.weight, plan))
    if tied:
        net.lm_head.weight = tied[0].weight
    else:
        net.lm_head.weight = _param(_vocab_rows(net.lm_head.weight, plan))
    net.lm_head.out_features = plan.vocab_shard
    covered.add(id(net.lm_head))
    _refuse_uncovered(net, covered)


def wire_collectives(net: nn.Module, plan: TPPlan, comm: Any) -> None:
    """Wrap the sharded layers (dense or packed) with the collectives that make the whole model again."""
    for module in list(net.modules()):
        if isinstance(module, PagedSelfAttention):
            module.o_proj = RowParallel(module.o_proj, comm)
        elif isinstance(module, GatedMLP):
            module.down_proj = RowParallel(module.down_proj, comm)
        elif isinstance(module, SparseMoeBlock):
            module.experts = AllReducedExperts(module.experts, comm)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, VocabEmbedding):
                setattr(parent, name, VocabParallelEmbedding(child.weight, plan.vocab_start, comm))
    net.lm_head = GatheredHead(net.lm_head, plan.vocab_size, comm)


def _shard_attention(attn: PagedSelfAttention, plan: TPPlan, backend: Any) -> None:
    d, q_size, kv_size = attn.head_size, attn.q_size, attn.kv_size
    q_rows = _head_rows(list(plan.q_heads()), d, 0)
    k_rows = _head_rows(plan.kv_heads(), d, q_size)
    v_rows = _head_rows(plan.kv_heads(), d, q_size + kv_size)
    _keep_rows(attn.qkv_proj, torch.cat([q_rows, k_rows, v_rows]))  # [(hq + 2 hkv) * D] of this rank
    _keep_columns(attn.o_proj, q_rows, plan.rank)
    attn.num_heads, attn.num_kv_heads = plan.local_heads, plan.local_kv_heads
    attn.q_size, attn.kv_size = plan.local_heads * d, plan.local_kv_heads * d
    attn.kv_end = attn.q_size + attn.kv_size
    attn._backend = backend  # the rank's backend, built for its local head counts
    attn._functional = bool(optional(backend, "functional_cache", False))


def _shard_mlp(mlp: GatedMLP, plan: TPPlan) -> None:
    inter = mlp.gate_up_proj.out_features // 2  # its own width: an MoE's shared expert differs from the MLP's
    mine = _my_slice(inter, plan, "MLP width")  # [I / world]
    _keep_rows(mlp.gate_up_proj, torch.cat([mine, mine + inter]))  # gate rows, then up rows
    _keep_columns(mlp.down_proj, mine, plan.rank)


def _shard_experts(stack: ExpertStack, plan: TPPlan) -> None:
    """Every expert keeps its slice of the intermediate dimension: w13 [E, 2I, H] -> [E, 2I/w, H], w2 -> [E, H, I/w]."""
    mine = _my_slice(stack.inter, plan, "expert width").to(stack.gate_up_proj.device)
    w13 = stack.w13().index_select(1, torch.cat([mine, mine + stack.inter]))  # gate rows, then up rows
    w2 = stack.w2().index_select(2, mine)
    stack.inter = mine.numel()
    stack.gate_up_proj = _param(w13.reshape(-1, stack.hidden_size))  # flat, as ExpertStack stores it
    stack.down_proj = _param(w2.reshape(-1, stack.inter))


def _my_slice(width: int, plan: TPPlan, what: str) -> torch.Tensor:
    """This rank's contiguous indices (int64 [width / world]) of a `width`-wide dimension."""
    if width % plan.world_size:
        raise TokenmillError(f"--tensor-parallel-size {plan.world_size} does not divide the model's {what} {width}; "
                             f"use a size that divides {width}")
    local = width // plan.world_size
    return torch.arange(plan.rank * local, (plan.rank + 1) * local)


def _head_rows(heads: list[int], head_size: int, offset: int) -> torch.Tensor:
    """Row indices (int64 [len(heads) * D]) of `heads` in a projection whose part starts at `offset`."""
    base = torch.tensor(heads, dtype=torch.int64).unsqueeze(1) * head_size + offset  # [h, 1]
    return (base + torch.arange(head_size)).reshape(-1)


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> None:
    """Column-parallel: keep output rows `rows` of the weight (and bias)."""
    idx = rows.to(linear.weight.device)
    linear.weight = _param(linear.weight.index_select(0, idx))
    if linear.bias is not None:
        linear.bias = _param(linear.bias.index_select(0, idx))
    linear.out_features = rows.numel()


def _keep_columns(linear: nn.Linear, columns: torch.Tensor, rank: int) -> None:
    """Row-parallel: keep input columns `columns`; the bias stays on rank 0 only (the sum adds it once)."""
    linear.weight = _param(linear.weight.index_select(1, columns.to(linear.weight.device)))
    if linear.bias is not None and rank != 0:
        linear.bias = None
    linear.in_features = columns.numel()


def _vocab_rows(weight: torch.Tensor, plan: TPPlan) -> torch.Tensor:
    """This rank's rows of a [V, H] table, zero-padded to [V / world (rounded up), H]."""
    shard = weight.new_zeros((plan.vocab_shard, weight.shape[1]))
    rows = weight[plan.vocab_start: plan.vocab_start + plan.vocab_shard]  # the last shard may be short
    shard[: rows.shape[0]] = rows
    return shard


def _param(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor.contiguous(), requires_grad=False)


def _refuse_uncovered(net: nn.Module, covered: set[int]) -> None:
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear) and id(module) not in covered:
            raise TokenmillError(f"tensor parallelism does not know how to split layer {name!r} "
                                 f"({type(module).__name__}) of {type(net).__name__}; run this model "
                                 "with --tensor-parallel-size 1")
