"""A tiny random-weight Llama checkpoint and byte-level tokenizer, written to a directory for engine runs.

The files are what a Hugging Face Llama directory holds (config.json, model.safetensors,
tokenizer.json and its config), so the engine loads them through its ordinary loader. The shape is
small enough for a 2-core CPU but has what backends care about: GQA (4 query heads over 2 KV heads)
and head size 64. Weights are large enough that greedy choices are not near-ties.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

SPECIALS = ["<s>", "</s>"]
VOCAB_SIZE = 256 + len(SPECIALS)  # one token per byte, then the specials
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 256,
    "eos_token_id": 257,
    "torch_dtype": "float32",
}
# Seed 2 keeps the kit's workload well conditioned: on the CPU reference, every greedy choice beats
# the runner-up by at least 0.16 in logprob (seeds 0-7 ranged from 0.0002 to 0.17), so a backend's
# float32 rounding cannot flip a token (tests/core/testing/test_kit_workload.py checks it).
SEED = 2


def write_tiny_llama(directory: Path, seed: int = SEED) -> Path:
    """Write the checkpoint and tokenizer into `directory` (created if missing); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(CONFIG, indent=2))
    save_file(_weights(seed), str(directory / "model.safetensors"), metadata={"format": "pt"})
    _write_tokenizer(directory)
    return directory


def _weights(seed: int) -> dict[str, torch.Tensor]:
    """Hugging Face Llama tensor names; norms near 1, the rest N(0, 0.15^2) (a 0.02 init gives near-ties)."""
    c, gen = CONFIG, torch.Generator().manual_seed(seed)
    hidden, inner, head = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q_out, kv_out = c["num_attention_heads"] * head, c["num_key_value_heads"] * head
    shapes = {"model.embed_tokens.weight": (VOCAB_SIZE, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (VOCAB_SIZE, hidden)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (q_out, hidden), p + "self_attn.k_proj.weight": (kv_out, hidden),
            p + "self_attn.v_proj.weight": (kv_out, hidden), p + "self_attn.o_proj.weight": (hidden, q_out),
            p + "mlp.gate_proj.weight": (inner, hidden), p + "mlp.up_proj.weight": (inner, hidden),
            p + "mlp.down_proj.weight": (hidden, inner),
        })
    return {name: (1.0 + 0.1 * torch.randn(shape, generator=gen)) if "norm" in name
            else 0.15 * torch.randn(shape, generator=gen) for name, shape in shapes.items()}


def _write_tokenizer(directory: Path) -> None:
    """A byte-level BPE with no merges: every byte is a token, then <s> and </s>."""
    from transformers import PreTrainedTokenizerFast  # the engine's tokenizer type; imported late (slow)

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({tok: 256 + i for i, tok in enumerate(SPECIALS)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(str(directory))
