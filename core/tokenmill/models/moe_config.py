"""MoeConfig: the mixture-of-experts fields of a config.json, per family (Mixtral, Qwen2-MoE, Qwen3-MoE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenmill.errors import ModelLoadError

MOE_STYLES = ("mixtral", "qwen_moe")


@dataclass(frozen=True, slots=True)
class MoeConfig:
    """How a model's sparse layers route and how wide their experts are."""

    num_experts: int  # E
    top_k: int  # K experts per token
    expert_intermediate_size: int  # I of each routed expert
    renormalize: bool  # rescale the K routing weights to sum to 1
    sparse_layers: tuple[bool, ...]  # per layer: True for an MoE block, False for the dense GatedMLP
    shared_expert_intermediate_size: int = 0  # Qwen2-MoE's always-on expert (with a sigmoid gate); 0: none

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], style: str, num_layers: int, source: str) -> "MoeConfig":
        """Read the `style` family's MoE fields; a missing or impossible one raises ModelLoadError."""
        if style == "mixtral":
            experts, inter = _positive(cfg, "num_local_experts", source), _positive(cfg, "intermediate_size", source)
            sparse, renorm, shared = (True,) * num_layers, True, 0
        else:
            key = "num_experts" if "num_experts" in cfg else "num_local_experts"  # transformers 5 writes the latter
            experts, inter = _positive(cfg, key, source), _positive(cfg, "moe_intermediate_size", source)
            sparse = _qwen_sparse_layers(cfg, num_layers)
            renorm = bool(cfg.get("norm_topk_prob", False))
            shared = int(cfg.get("shared_expert_intermediate_size") or 0)
        top_k = _positive(cfg, "num_experts_per_tok", source)
        if top_k > experts:
            raise ModelLoadError(f"{source}: num_experts_per_tok={top_k} exceeds the {experts} experts")
        return cls(experts, top_k, inter, renorm, sparse, shared)


def _qwen_sparse_layers(cfg: dict[str, Any], num_layers: int) -> tuple[bool, ...]:
    """transformers' rule: layer i is sparse unless listed in mlp_only_layers, every decoder_sparse_step-th."""
    step = int(cfg.get("decoder_sparse_step") or 1)
    dense = set(cfg.get("mlp_only_layers") or ())
    return tuple(i not in dense and (i + 1) % step == 0 for i in range(num_layers))


def _positive(cfg: dict[str, Any], key: str, source: str) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelLoadError(f"{source}: field {key!r} must be a positive integer for this MoE model, found {value!r}")
    return value
