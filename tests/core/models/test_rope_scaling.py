"""Every scaled rope type against transformers' own rope code, and the per-layer window parsing."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import Gemma2Config, Gemma3TextConfig, LlamaConfig, Phi3Config, Qwen2Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tokenmill.errors import ModelLoadError
from tokenmill.models import arch_config
from tokenmill.models.rotary import cos_sin_cache, rope_parameters

SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 32.0,
             "beta_slow": 1.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32},
    "longrope": {"rope_type": "longrope", "short_factor": [1.0 + 0.05 * i for i in range(16)],
                 "long_factor": [1.5 + 0.25 * i for i in range(16)], "original_max_position_embeddings": 64},
}


def _llama(scaling: dict) -> LlamaConfig:
    config = LlamaConfig(hidden_size=128, num_attention_heads=4, max_position_embeddings=256, rope_theta=10000.0,
                         rope_scaling=dict(scaling))
    config.architectures = ["LlamaForCausalLM"]
    return config


@pytest.mark.parametrize("seq_len", [48, 200])  # inside and beyond the original context
@pytest.mark.parametrize("rope_type", list(SCALINGS))
def test_inverse_frequencies_and_attention_factor_match_transformers(rope_type, seq_len):
    config = _llama(SCALINGS[rope_type])
    arch = arch_config(config.to_dict())[0]
    assert arch.rope_scaling["rope_type"] == rope_type
    want_freq, want_factor = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"), seq_len)
    got_freq, got_factor = rope_parameters(arch, seq_len)
    assert torch.equal(got_freq, want_freq.float()) and got_factor == pytest.approx(want_factor, rel=1e-12)
    if rope_type == "yarn":
        assert got_factor > 1.0  # the mscale reaches the cos/sin cache
        cache = cos_sin_cache(arch, 4, torch.device("cpu"))
        assert torch.allclose(cache[1, 0], torch.tensor(math.cos(float(got_freq[0]))) * got_factor)


def test_longrope_switches_to_long_factors_beyond_the_original_context():
    arch = arch_config(_llama(SCALINGS["longrope"]).to_dict())[0]
    short, _ = rope_parameters(arch, 64)
    long, _ = rope_parameters(arch, 65)
    assert not torch.equal(short, long)


def test_phi3_su_scaling_and_its_top_level_original_context():
    factors = {"short_factor": [1.0] * 16, "long_factor": [4.0] * 16}
    config = Phi3Config(hidden_size=128, num_attention_heads=4, max_position_embeddings=512,
                        original_max_position_embeddings=128, rope_scaling={"type": "longrope", **factors})
    config.architectures = ["Phi3ForCausalLM"]
    early = {**config.to_dict(), "rope_parameters": None, "rope_scaling": {"type": "su", **factors}}  # early Phi-3
    arch = arch_config(early)[0]
    assert arch.rope_scaling["rope_type"] == "longrope"
    assert arch.rope_scaling["original_max_position_embeddings"] == 128
    want, factor = ROPE_INIT_FUNCTIONS["longrope"](config, torch.device("cpu"), 512)
    got, got_factor = rope_parameters(arch, 512)
    assert torch.equal(got, want) and got_factor == pytest.approx(factor) and factor > 1


def test_partial_rotary_is_refused_by_name():
    config = {**_llama({"rope_type": "linear", "factor": 2.0}).to_dict(), "partial_rotary_factor": 0.75}
    with pytest.raises(ModelLoadError, match="partial_rotary_factor"):
        arch_config(config)


def test_gemma_layer_windows_follow_the_family_pattern():
    gemma2 = Gemma2Config(num_hidden_layers=4, sliding_window=64).to_dict()
    gemma2["architectures"] = ["Gemma2ForCausalLM"]
    assert arch_config(gemma2)[0].layer_windows == (64, None, 64, None)
    del gemma2["layer_types"]  # a transformers-4 config: the family's every-second-layer pattern
    assert arch_config(gemma2)[0].layer_windows == (64, None, 64, None)
    gemma3 = Gemma3TextConfig(num_hidden_layers=7, sliding_window=32).to_dict()
    gemma3["architectures"] = ["Gemma3ForCausalLM"]
    arch = arch_config(gemma3)[0]
    assert arch.layer_windows == (32,) * 5 + (None, 32) and arch.local_rope_theta == 10000.0
    assert arch.rope_theta == 1e6 and not arch.all_layers_windowed
    legacy = {k: v for k, v in gemma3.items() if k not in ("layer_types", "rope_parameters")}
    legacy.update(rope_theta=1e6, rope_local_base_freq=1e4, sliding_window_pattern=6)
    assert arch_config(legacy)[0].layer_windows == arch.layer_windows


def test_qwen2_windows_from_max_window_layers_and_mistral_everywhere():
    qwen = Qwen2Config(use_sliding_window=True, sliding_window=64, max_window_layers=1, num_hidden_layers=3).to_dict()
    qwen["architectures"] = ["Qwen2ForCausalLM"]
    assert arch_config(qwen)[0].layer_windows == (None, 64, 64)
    del qwen["layer_types"]
    assert arch_config(qwen)[0].layer_windows == (None, 64, 64)
    mistral = {**_llama({"rope_type": "linear", "factor": 1.0}).to_dict(), "sliding_window": 16,
               "architectures": ["MistralForCausalLM"]}
    parsed = arch_config(mistral)[0]
    assert parsed.layer_windows == (16,) * parsed.num_layers and parsed.all_layers_windowed
