"""Writes a random-weight Llama checkpoint (safetensors + a word-level tokenizer.json) into a folder.

Used by the GPU tests (tiny shapes) and the end-to-end benchmarks (Llama-3-8B shapes, built on
the GPU so 16 GB of bf16 is generated in seconds). Speed does not depend on the weight values.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

LLAMA3_8B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=14336, vocab_size=128256, max_position_embeddings=32768, rope_theta=500000.0)
TINY = dict(hidden_size=256, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2,
            intermediate_size=512, vocab_size=1024, max_position_embeddings=1024, rope_theta=10000.0)
SHARD_BYTES = 4 << 30


def config_dict(shape: dict) -> dict:
    """A transformers LlamaConfig dict for `shape`, untied head, no biases, bf16."""
    return dict(shape, architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
                rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                torch_dtype="bfloat16", attention_bias=False, mlp_bias=False)


def _layer_shapes(cfg: dict, i: int) -> dict[str, tuple[int, ...]]:
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    d = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * d
    p = f"model.layers.{i}."
    return {
        p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
        p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
        p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
        p + "mlp.down_proj.weight": (h, inter),
        p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
    }


def all_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the checkpoint with its shape, in HF naming."""
    v, h = cfg["vocab_size"], cfg["hidden_size"]
    shapes = {"model.embed_tokens.weight": (v, h)}
    for i in range(cfg["num_hidden_layers"]):
        shapes.update(_layer_shapes(cfg, i))
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (v, h)})
    return shapes


def _tensor(shape: tuple[int, ...], gen: torch.Generator, device: str) -> torch.Tensor:
    if len(shape) == 1:  # norm weights near 1
        return (1.0 + 0.1 * torch.randn(shape, generator=gen, device=device)).to(torch.bfloat16)
    return (torch.randn(shape, generator=gen, device=device) * shape[-1] ** -0.5).to(torch.bfloat16)


def write_tokenizer(folder: Path, vocab_size: int) -> None:
    """A word-level tokenizer.json whose token i is the word `w{i}`; ids 0-2 are unk/bos/eos."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    vocab["<unk>"], vocab["<s>"], vocab["</s>"] = 0, 1, 2
    for i in range(3):
        vocab.pop(f"w{i}")
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(str(folder))


def write_model(folder: str | Path, shape: dict, device: str = "cuda", seed: int = 0) -> Path:
    """Write config.json, sharded model-*.safetensors with index, and the tokenizer; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = config_dict(shape)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    gen = torch.Generator(device=device).manual_seed(seed)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, shp in all_shapes(cfg).items():
        t = _tensor(shp, gen, device).cpu()
        if size and size + t.numel() * 2 > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += t.numel() * 2
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in shard})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    write_tokenizer(folder, cfg["vocab_size"])
    return folder
