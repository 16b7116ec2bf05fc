"""Config parsing, the registry, and the rotary frequencies against transformers' own RoPE code."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, Qwen2Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tiny_models import CONFIGS
from tokenmill.errors import ModelLoadError
from tokenmill.models import arch_config, model_entry, supported_architectures
from tokenmill.models.rotary import cos_sin_cache, inverse_frequencies


def _parse(config) -> object:
    return arch_config(config.to_dict())[0]


def test_supported_architectures():
    archs = supported_architectures()
    assert archs == tuple(sorted(archs))
    assert {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
            "MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM",
            "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM"} <= set(archs)


def test_unknown_architecture_lists_the_supported_ones():
    with pytest.raises(ModelLoadError) as exc_info:
        model_entry("FalconForCausalLM")
    assert "'FalconForCausalLM'" in str(exc_info.value)
    assert all(name in str(exc_info.value) for name in supported_architectures())


def test_family_traits():
    qwen2, qwen3, llama = _parse(CONFIGS["qwen2"]), _parse(CONFIGS["qwen3"]), _parse(CONFIGS["llama2"])
    assert (qwen2.qkv_bias, qwen2.o_bias, qwen2.qk_norm, qwen2.tie_word_embeddings) == (True, False, False, True)
    assert (qwen3.qkv_bias, qwen3.qk_norm, qwen3.head_size, qwen3.q_size) == (False, True, 32, 128)
    assert (llama.qkv_bias, llama.num_kv_heads, llama.head_size) == (False, 4, 16)


def test_sliding_window_only_when_used():
    assert _parse(CONFIGS["mistral"]).sliding_window == 12
    assert _parse(CONFIGS["qwen2"]).sliding_window is None  # use_sliding_window is off
    windowed = Qwen2Config(use_sliding_window=True, sliding_window=64, max_window_layers=0, num_hidden_layers=2)
    windowed.architectures = ["Qwen2ForCausalLM"]
    assert _parse(windowed).sliding_window == 64


@pytest.mark.parametrize(
    "scaling",
    [
        None,
        {"rope_type": "linear", "factor": 4.0},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 32},
    ],
)
def test_inverse_frequencies_match_transformers(scaling):
    config = LlamaConfig(hidden_size=256, num_attention_heads=4, rope_theta=500000.0, rope_scaling=scaling)
    config.architectures = ["LlamaForCausalLM"]
    rope_type = (scaling or {}).get("rope_type", "default")
    if rope_type == "default":
        dim = 64
        expected = 1.0 / (500000.0 ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    else:
        expected, _ = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))
    assert torch.equal(inverse_frequencies(_parse(config)), expected)


def test_cos_sin_cache_layout():
    arch = _parse(CONFIGS["llama3"])
    cache = cos_sin_cache(arch, 40, torch.device("cpu"))  # [40, D]
    angles = torch.outer(torch.arange(40.0), inverse_frequencies(arch))
    assert cache.shape == (40, arch.head_size) and cache.dtype == torch.float32
    half = arch.head_size // 2
    assert torch.equal(cache[:, :half], angles.cos()) and torch.equal(cache[:, half:], angles.sin())


def test_legacy_rope_fields_parse_like_the_new_ones():
    new = {**CONFIGS["llama2"].to_dict(), "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}
    old = {k: v for k, v in new.items() if k != "rope_parameters"}
    old.update(rope_theta=1e4, rope_scaling={"type": "linear", "factor": 2.0})
    assert arch_config(new)[0] == arch_config(old)[0]
    assert arch_config(old)[0].rope_scaling == {"rope_type": "linear", "factor": 2.0}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"rope_parameters": {"rope_type": "bogus", "factor": 4.0}}, "'bogus' is not supported"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"num_key_value_heads": 3}, "not a multiple"),
        ({"hidden_size": None}, "'hidden_size'"),
        ({"architectures": None}, "no 'architectures'"),
    ],
)
def test_bad_configs_name_the_field(change, needle):
    config = {**CONFIGS["llama2"].to_dict(), **change}
    with pytest.raises(ModelLoadError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        arch_config(config)
