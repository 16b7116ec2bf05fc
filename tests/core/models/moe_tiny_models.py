"""Tiny random-weight mixture-of-experts checkpoints (Mixtral, Qwen2-MoE, Qwen3-MoE), saved by transformers."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig

from tiny_models import VOCAB_SIZE, byte_tokenizer, randomize

_COMMON = dict(
    vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=256, bos_token_id=256, eos_token_id=257,
)

# 8 experts, 2 per token: a 5-token prompt leaves most experts empty, a 33-token one fills them unevenly.
MOE_CONFIGS = {
    "mixtral": MixtralConfig(**_COMMON, intermediate_size=64, num_local_experts=8, num_experts_per_tok=2),
    "qwen2_moe": Qwen2MoeConfig(
        **_COMMON, intermediate_size=96, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
        shared_expert_intermediate_size=64, norm_topk_prob=False, tie_word_embeddings=True,
    ),
    "qwen3_moe": Qwen3MoeConfig(  # layer 1 dense (mlp_only_layers), as Qwen3-MoE configs allow
        **_COMMON, head_dim=32, intermediate_size=96, moe_intermediate_size=32, num_experts=8,
        num_experts_per_tok=3, norm_topk_prob=True, mlp_only_layers=[1],
    ),
}
for _config, _arch in zip(MOE_CONFIGS.values(), ("Mixtral", "Qwen2Moe", "Qwen3Moe")):
    _config.architectures = [f"{_arch}ForCausalLM"]


def write_tiny_moe_model(family: str, directory: Path, seed: int = 0) -> Path:
    """Save a random `family` MoE model (safetensors, per-expert tensors) and the byte tokenizer."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(MOE_CONFIGS[family], dtype=torch.float32)
    randomize(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    byte_tokenizer().save_pretrained(directory)
    return directory
