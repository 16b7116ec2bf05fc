"""Tiny random-weight checkpoints whose head counts exercise each way tensor parallelism splits KV heads."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tokenmill.testing.tiny_model import write_tiny_llama

_BASE = {
    "model_type": "llama", "hidden_size": 96, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 6, "head_dim": 32, "vocab_size": 259,  # odd: the vocabulary shards are padded
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
    "bos_token_id": 256, "eos_token_id": 257, "torch_dtype": "float32",
}
# name -> config changes: KV heads that split evenly, that are fewer than the ranks, and that
# neither divide by nor into 2 (replicated to 6); with biases and tied embeddings along the way.
VARIANTS = {
    "kv2": {"architectures": ["LlamaForCausalLM"], "num_key_value_heads": 2, "tie_word_embeddings": False},
    "kv1": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "num_key_value_heads": 1,
            "tie_word_embeddings": True},
    "kv3": {"architectures": ["LlamaForCausalLM"], "num_key_value_heads": 3, "tie_word_embeddings": False,
            "attention_bias": True, "mlp_bias": True},
    # Qwen2-MoE: 4 experts (top 2) of width 64 and a gated shared expert of width 128, split by width
    "moe": {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "num_key_value_heads": 2,
            "tie_word_embeddings": False, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64,
            "shared_expert_intermediate_size": 128, "norm_topk_prob": False, "decoder_sparse_step": 1,
            "mlp_only_layers": []},
    "heads3": {"architectures": ["LlamaForCausalLM"], "num_attention_heads": 3, "num_key_value_heads": 1,
               "tie_word_embeddings": True},  # cannot split over 2 ranks
}


def write_tp_model(directory: Path, variant: str, seed: int = 0) -> Path:
    """A model directory (config, safetensors, byte tokenizer) for `variant` of VARIANTS."""
    write_tiny_llama(directory)  # the tokenizer files; config and weights are replaced below
    config = {**_BASE, **VARIANTS[variant]}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    save_file(_weights(config, seed), str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def _weights(c: dict, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden, inner, head, vocab = c["hidden_size"], c["intermediate_size"], c["head_dim"], c["vocab_size"]
    q_out, kv_out = c["num_attention_heads"] * head, c["num_key_value_heads"] * head
    attn_bias = c.get("attention_bias") or c["model_type"] in ("qwen2", "qwen2_moe")
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (vocab, hidden)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (q_out, hidden), p + "self_attn.k_proj.weight": (kv_out, hidden),
            p + "self_attn.v_proj.weight": (kv_out, hidden), p + "self_attn.o_proj.weight": (hidden, q_out),
        })
        shapes.update(_mlp_shapes(c, p, hidden, inner))
        if attn_bias:
            shapes.update({p + "self_attn.q_proj.bias": (q_out,), p + "self_attn.k_proj.bias": (kv_out,),
                           p + "self_attn.v_proj.bias": (kv_out,)})
        if c.get("attention_bias"):
            shapes[p + "self_attn.o_proj.bias"] = (hidden,)
        if c.get("mlp_bias"):
            shapes.update({p + "mlp.gate_proj.bias": (inner,), p + "mlp.up_proj.bias": (inner,),
                           p + "mlp.down_proj.bias": (hidden,)})
    return {name: (1.0 + 0.1 * torch.randn(shape, generator=gen)) if "norm" in name
            else 0.15 * torch.randn(shape, generator=gen) for name, shape in shapes.items()}


def _mlp_shapes(c: dict, p: str, hidden: int, inner: int) -> dict[str, tuple[int, ...]]:
    """One layer's MLP tensors: the dense GatedMLP's, or an MoE block's router, experts and shared expert."""
    if "num_experts" not in c:
        return {p + "mlp.gate_proj.weight": (inner, hidden), p + "mlp.up_proj.weight": (inner, hidden),
                p + "mlp.down_proj.weight": (hidden, inner)}
    width, shared = c["moe_intermediate_size"], c["shared_expert_intermediate_size"]
    shapes = {p + "mlp.gate.weight": (c["num_experts"], hidden), p + "mlp.shared_expert_gate.weight": (1, hidden)}
    for e in range(c["num_experts"]):
        q = f"{p}mlp.experts.{e}."
        shapes.update({q + "gate_proj.weight": (width, hidden), q + "up_proj.weight": (width, hidden),
                       q + "down_proj.weight": (hidden, width)})
    q = p + "mlp.shared_expert."
    shapes.update({q + "gate_proj.weight": (shared, hidden), q + "up_proj.weight": (shared, hidden),
                   q + "down_proj.weight": (hidden, shared)})
    return shapes
