"""Writes a random-weight Qwen3-MoE checkpoint (safetensors, per-expert tensors, word-level tokenizer).

QWEN3_30B_A3B is that model's shape: 48 layers, 128 experts of width 768, 8 routed per token,
hidden 2048, 32 query / 4 key-value heads of 128. `fit_layers` trims the depth to the disk a
machine has (the lent GPU machine's 64 GiB holds about 24 of the 48 layers' 1.2 GiB each).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

import random_llama

QWEN3_30B_A3B = dict(hidden_size=2048, num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4,
                     head_dim=128, intermediate_size=6144, moe_intermediate_size=768, num_experts=128,
                     num_experts_per_tok=8, vocab_size=151936, max_position_embeddings=8192, rope_theta=1e6)
TINY_MOE = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                intermediate_size=512, moe_intermediate_size=128, num_experts=8, num_experts_per_tok=2,
                vocab_size=1024, max_position_embeddings=1024, rope_theta=1e6)


def config_dict(shape: dict) -> dict:
    """A transformers Qwen3MoeConfig dict for `shape`: every layer sparse, normalised top-k, bf16."""
    return dict(shape, architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", hidden_act="silu",
                rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, norm_topk_prob=True,
                decoder_sparse_step=1, mlp_only_layers=[], torch_dtype="bfloat16", attention_bias=False)


def layer_shapes(cfg: dict, i: int) -> dict[str, tuple[int, ...]]:
    """One decoder layer's tensors (attention with q/k norms, router, experts) in HF naming."""
    h, d, inter = cfg["hidden_size"], cfg["head_dim"], cfg["moe_intermediate_size"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    p = f"model.layers.{i}."
    shapes = {
        p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
        p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
        p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,),
        p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
        p + "mlp.gate.weight": (cfg["num_experts"], h),
    }
    for e in range(cfg["num_experts"]):
        shapes.update({p + f"mlp.experts.{e}.gate_proj.weight": (inter, h), p + f"mlp.experts.{e}.up_proj.weight": (inter, h),
                       p + f"mlp.experts.{e}.down_proj.weight": (h, inter)})
    return shapes


def all_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint with its shape."""
    v, h = cfg["vocab_size"], cfg["hidden_size"]
    shapes = {"model.embed_tokens.weight": (v, h)}
    for i in range(cfg["num_hidden_layers"]):
        shapes.update(layer_shapes(cfg, i))
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (v, h)})
    return shapes


def active_bytes(cfg: dict) -> dict[str, int]:
    """bf16 bytes one decode token reads: attention, norms, router, top_k experts per layer, the head."""
    layer = layer_shapes(cfg, 0)
    expert = sum(torch.Size(s).numel() for n, s in layer.items() if ".experts.0." in n) * 2
    dense = sum(torch.Size(s).numel() for n, s in layer.items() if ".experts." not in n) * 2
    head = cfg["vocab_size"] * cfg["hidden_size"] * 2
    layers = cfg["num_hidden_layers"]
    return {"active": layers * (dense + cfg["num_experts_per_tok"] * expert) + head,
            "all_weights": layers * (dense + cfg["num_experts"] * expert) + 2 * head}


def fit_layers(shape: dict, folder: Path, headroom: float = 0.8) -> dict:
    """`shape` with at most as many layers as `folder`'s free disk holds (bf16)."""
    cfg = config_dict(shape)
    per_layer = sum(torch.Size(s).numel() for s in layer_shapes(cfg, 0).values()) * 2
    free = shutil.disk_usage(folder.parent if folder.parent.exists() else "/").free
    fixed = 2 * cfg["vocab_size"] * cfg["hidden_size"] * 2
    layers = max(1, min(shape["num_hidden_layers"], int((free * headroom - fixed) // per_layer)))
    return dict(shape, num_hidden_layers=layers)


def write_model(folder: str | Path, shape: dict, device: str = "cuda", seed: int = 0) -> Path:
    """config.json, sharded safetensors with an index, and the tokenizer; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = config_dict(shape)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    gen = torch.Generator(device=device).manual_seed(seed)
    weight_map, shard, size, index = {}, {}, 0, 0
    for name, shp in list(all_shapes(cfg).items()) + [(None, None)]:
        if shard and (name is None or size + torch.Size(shp).numel() * 2 > random_llama.SHARD_BYTES):
            fname = f"model-{index:05d}.safetensors"
            save_file(shard, str(folder / fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in shard})
            shard, size, index = {}, 0, index + 1
        if name is not None:
            shard[name] = random_llama._tensor(shp, gen, device).cpu()
            size += shard[name].numel() * 2
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    random_llama.write_tokenizer(folder, cfg["vocab_size"])
    return folder
