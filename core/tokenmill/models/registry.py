"""The model registry: a config's `architectures` name -> the graph class and its family traits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from tokenmill.errors import ModelLoadError
from tokenmill.models.arch_config import ArchConfig, FamilyTraits
from tokenmill.models.gemma import GemmaForCausalLM
from tokenmill.models.llama import LlamaForCausalLM
from tokenmill.models.moe_families import MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM
from tokenmill.models.phi3 import Phi3ForCausalLM
from tokenmill.models.qwen3 import Qwen3ForCausalLM


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """How to build one architecture: its graph class and what its config leaves implicit."""

    model_class: type[nn.Module]
    traits: FamilyTraits


_GELU_TANH = ("gelu_pytorch_tanh", "gelu_tanh")  # transformers' and vLLM's names for the same GELU

_REGISTRY: dict[str, ModelEntry] = {
    "LlamaForCausalLM": ModelEntry(LlamaForCausalLM, FamilyTraits()),
    "MistralForCausalLM": ModelEntry(LlamaForCausalLM, FamilyTraits()),
    "Qwen2ForCausalLM": ModelEntry(LlamaForCausalLM, FamilyTraits(qkv_bias=True, o_bias=False)),
    "Qwen3ForCausalLM": ModelEntry(Qwen3ForCausalLM, FamilyTraits(qk_norm=True)),
    # mixture of experts (models/moe.py)
    "MixtralForCausalLM": ModelEntry(MixtralForCausalLM, FamilyTraits(moe="mixtral")),
    "Qwen2MoeForCausalLM": ModelEntry(Qwen2MoeForCausalLM, FamilyTraits(qkv_bias=True, o_bias=False, moe="qwen_moe")),
    "Qwen3MoeForCausalLM": ModelEntry(Qwen3MoeForCausalLM, FamilyTraits(qk_norm=True, moe="qwen_moe")),
    "Gemma2ForCausalLM": ModelEntry(GemmaForCausalLM, FamilyTraits(activations=_GELU_TANH, sliding_pattern=2)),
    "Gemma3ForCausalLM": ModelEntry(
        GemmaForCausalLM, FamilyTraits(qk_norm=True, activations=_GELU_TANH, sliding_pattern=6)
    ),
    "Phi3ForCausalLM": ModelEntry(Phi3ForCausalLM, FamilyTraits()),
}


def supported_architectures() -> tuple[str, ...]:
    """The `architectures` names tokenmill can run, sorted."""
    return tuple(sorted(_REGISTRY))


def model_entry(architecture: str) -> ModelEntry:
    """The entry for `architecture`; an unknown name raises ModelLoadError listing the known ones."""
    entry = _REGISTRY.get(architecture)
    if entry is None:
        raise ModelLoadError(
            f"model architecture {architecture!r} is not supported; "
            f"supported architectures: {', '.join(supported_architectures())}"
        )
    return entry


def arch_config(cfg: dict[str, Any], source: str = "config.json") -> tuple[ArchConfig, ModelEntry]:
    """Parse a config.json dict for a supported architecture into (ArchConfig, its ModelEntry)."""
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list) or not archs:
        raise ModelLoadError(
            f"{source} has no 'architectures' list, so the model class is unknown; "
            f"supported architectures: {', '.join(supported_architectures())}"
        )
    entry = model_entry(str(archs[0]))
    return ArchConfig.from_hf_config(cfg, entry.traits, source), entry
