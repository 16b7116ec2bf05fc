"""Tiny random-weight checkpoints of every supported family, written the way transformers writes them."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import Gemma2Config, Gemma3TextConfig, LlamaConfig, MistralConfig, Phi3Config
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen3Config
from transformers import AutoModelForCausalLM

SPECIALS = ["<s>", "</s>", "<|user|>", "<|assistant|>"]
VOCAB_SIZE = 256 + len(SPECIALS)  # byte-level tokens, then the specials
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '</s>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
_COMMON = dict(
    vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
    max_position_embeddings=256, bos_token_id=256, eos_token_id=257,
)

# family -> (config, how to save): GQA wherever the family uses it.
CONFIGS = {
    "llama2": LlamaConfig(**_COMMON, num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-5),
    "llama3": LlamaConfig(
        **_COMMON, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32},
    ),
    # windows shorter than the test prompts (up to 33 + 32 tokens), so windowed attention is exercised
    "mistral": MistralConfig(**_COMMON, num_attention_heads=4, num_key_value_heads=2, sliding_window=12),
    "qwen2": Qwen2Config(**_COMMON, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen3": Qwen3Config(**_COMMON, num_attention_heads=4, num_key_value_heads=2, head_dim=32),
    "gemma2": Gemma2Config(  # soft-capped scores and logits; layer 0 windowed, layer 1 global
        **_COMMON, num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
        query_pre_attn_scalar=24, attn_logit_softcapping=5.0, final_logit_softcapping=3.0, pad_token_id=0,
    ),
    "gemma3": Gemma3TextConfig(  # q/k norms; local rope base on the windowed layer, linear scaling on the global
        **_COMMON, num_attention_heads=4, num_key_value_heads=1, head_dim=32, sliding_window=10,
        layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=32, pad_token_id=0,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
    ),
    "phi3": Phi3Config(  # fused checkpoints, longrope (short factors: loaded with max_model_len 128), windows
        **_COMMON, num_attention_heads=4, num_key_value_heads=2, sliding_window=20, pad_token_id=0,
        original_max_position_embeddings=128,
        rope_scaling={"type": "longrope", "short_factor": [1.0 + 0.1 * i for i in range(8)],
                      "long_factor": [2.0 + 0.5 * i for i in range(8)]},
    ),
}
_ARCHS = ("LlamaForCausalLM", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
          "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM")
for _config, _arch in zip(CONFIGS.values(), _ARCHS):
    _config.architectures = [_arch]
LOAD_ARGS = {"phi3": {"max_model_len": 128}}  # within longrope's original context: its short factors
SHARDED = {"mistral"}  # saved in several shards with model.safetensors.index.json


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with no merges: every byte is a token, plus the chat specials."""
    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars))}
    vocab.update({tok: 256 + i for i, tok in enumerate(SPECIALS)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[2:]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights large enough that logits spread out (transformers' 0.02 init gives near-ties)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            param.copy_(1.0 + 0.1 * noise if "norm" in name else 0.15 * noise)


def write_tiny_model(family: str, directory: Path, seed: int = 0) -> Path:
    """Save a random `family` model (safetensors) and the byte tokenizer into `directory`."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIGS[family], dtype=torch.float32)
    randomize(model, seed)
    shard = "50KB" if family in SHARDED else "1GB"
    model.save_pretrained(directory, safe_serialization=True, max_shard_size=shard)
    byte_tokenizer().save_pretrained(directory)
    return directory
