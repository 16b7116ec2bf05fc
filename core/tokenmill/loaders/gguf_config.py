"""The family-specific part of a GGUF's config: its transformers architecture and the metadata keys
(mixture of experts, soft-capping, windows) that only some families carry.

The keys are gguf.constants.Keys' ("{arch}.expert_count", ...); the transformers field each fills
is the one that family's config.json uses, so the model classes read GGUF and safetensors
checkpoints through one parser. Whether tokenmill builds the architecture is the model registry's
call: an unbuilt one is refused there, by name.
"""

from __future__ import annotations

from typing import Any, Callable

from gguf.constants import Keys

# llama.cpp architecture name -> transformers architecture ("llama" with experts is Mixtral)
GGUF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
    "qwen2moe": "Qwen2MoeForCausalLM", "qwen3moe": "Qwen3MoeForCausalLM",
    "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM", "phi3": "Phi3ForCausalLM",
}
# transformers field <- gguf key (formatted with the architecture), per family
_MOE = {"num_experts_per_tok": Keys.LLM.EXPERT_USED_COUNT}
_FIELDS: dict[str, dict[str, str]] = {
    "mixtral": {**_MOE, "num_local_experts": Keys.LLM.EXPERT_COUNT},
    "qwen2moe": {**_MOE, "num_experts": Keys.LLM.EXPERT_COUNT, "moe_intermediate_size": Keys.LLM.EXPERT_FEED_FORWARD_LENGTH,
                 "shared_expert_intermediate_size": Keys.LLM.EXPERT_SHARED_FEED_FORWARD_LENGTH},
    "qwen3moe": {**_MOE, "num_experts": Keys.LLM.EXPERT_COUNT, "moe_intermediate_size": Keys.LLM.EXPERT_FEED_FORWARD_LENGTH,
                 "norm_topk_prob": Keys.LLM.EXPERT_WEIGHTS_NORM},
    "gemma2": {"attn_logit_softcapping": Keys.LLM.ATTN_LOGIT_SOFTCAPPING,
               "final_logit_softcapping": Keys.LLM.FINAL_LOGIT_SOFTCAPPING,
               "sliding_window": Keys.Attention.SLIDING_WINDOW},
    "gemma3": {"sliding_window": Keys.Attention.SLIDING_WINDOW, "final_logit_softcapping": Keys.LLM.FINAL_LOGIT_SOFTCAPPING},
    "phi3": {"sliding_window": Keys.Attention.SLIDING_WINDOW,
             "original_max_position_embeddings": Keys.Rope.SCALING_ORIG_CTX_LEN},
}
# Fields llama.cpp fixes in code rather than the file, as its loader sets them for the family.
_FIXED: dict[str, dict[str, Any]] = {
    "qwen2moe": {"decoder_sparse_step": 1, "mlp_only_layers": []},
    "qwen3moe": {"decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True},
    "gemma3": {"rope_local_base_freq": 10000.0, "sliding_window_pattern": 6},
}


def architecture_config(gguf_arch: str, field: Callable[..., Any]) -> dict[str, Any]:
    """The config.json fields of `gguf_arch`'s family read from the metadata (`field(key, default)`)."""
    family = "mixtral" if gguf_arch == "llama" and field(Keys.LLM.EXPERT_COUNT.format(arch=gguf_arch)) else gguf_arch
    architecture = "MixtralForCausalLM" if family == "mixtral" else GGUF_ARCHITECTURES[gguf_arch]
    out: dict[str, Any] = {"architectures": [architecture], **_FIXED.get(family, {})}
    for name, key in _FIELDS.get(family, {}).items():
        value = field(key.format(arch=gguf_arch))
        if value is not None:
            out[name] = value
    if family.startswith("gemma"):  # GGUF keeps no query_pre_attn_scalar; llama.cpp scales by head_dim
        out["query_pre_attn_scalar"] = field(Keys.Attention.KEY_LENGTH.format(arch=gguf_arch))
    return out
