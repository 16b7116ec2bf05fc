"""GGUF families beyond llama/qwen2/qwen3: names through gguf's own tables, merged experts split per
expert, Gemma's norm offset, and each family's config fields.

The expected transformers names are the ones those families' checkpoints use on disk (Mixtral's
block_sparse_moe.experts.{e}.w1, Qwen-MoE's mlp.experts.{e}.gate_proj, Gemma 2's four norms, Phi-3's
fused qkv_proj and gate_up_proj), written out here as the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, quants

from tokenmill.loaders import open_checkpoint
from tokenmill.loaders.weights import _check_unused

H, I, E, HEADS = 64, 32, 4, 4  # hidden, (expert) intermediate, experts, heads


def _write(path, arch: str, metadata: dict, tensors: dict) -> str:
    """A GGUF of `arch`: metadata key suffix -> value (uint32 for ints, float32, bool), name -> float32
    array (or (array, type) to quantize it)."""
    writer = GGUFWriter(str(path), arch)
    base = {"block_count": 1, "embedding_length": H, "feed_forward_length": I, "attention.head_count": HEADS,
            "attention.head_count_kv": 2, "context_length": 64}
    for key, value in {**base, **metadata}.items():
        add = writer.add_bool if isinstance(value, bool) else writer.add_uint32 if isinstance(value, int) else writer.add_float32
        add(f"{arch}.{key}", value)
    for name, data in tensors.items():
        array, kind = data if isinstance(data, tuple) else (data, Q.F32)
        raw = array if kind == Q.F32 else quants.quantize(array, kind)
        writer.add_tensor(name, raw, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(np.float32)


def _attention(prefix="blk.0"):
    return {f"{prefix}.attn_norm.weight": _rand(H), f"{prefix}.attn_q.weight": _rand(H, H),
            f"{prefix}.attn_k.weight": _rand(H // 2, H), f"{prefix}.attn_v.weight": _rand(H // 2, H),
            f"{prefix}.attn_output.weight": _rand(H, H), "token_embd.weight": _rand(260, H),
            "output_norm.weight": _rand(H)}


def _experts():
    return {"blk.0.ffn_norm.weight": _rand(H), "blk.0.ffn_gate_inp.weight": _rand(E, H),
            "blk.0.ffn_gate_exps.weight": (_rand(E, I, H, seed=1), Q.Q8_0), "blk.0.ffn_up_exps.weight": _rand(E, I, H, seed=2),
            "blk.0.ffn_down_exps.weight": _rand(E, H, I, seed=3)}


def _assert_maps(checkpoint, expected: dict[str, np.ndarray]):
    for name, want in expected.items():
        assert checkpoint.shape(name) == want.shape, name
        np.testing.assert_allclose(checkpoint.tensor(name).numpy(), want, rtol=0, atol=0.02 * np.abs(want).max(), err_msg=name)
    _check_unused(checkpoint, set(expected) | _attention_names())  # nothing in the file is left unused


def _attention_names():
    layer = "model.layers.0"
    return {f"{layer}.input_layernorm.weight", f"{layer}.self_attn.q_proj.weight", f"{layer}.self_attn.k_proj.weight",
            f"{layer}.self_attn.v_proj.weight", f"{layer}.self_attn.o_proj.weight", "model.embed_tokens.weight",
            "model.norm.weight"}


def test_qwen3_moe_experts_answer_per_expert(tmp_path):
    tensors = {**_attention(), **_experts(), "blk.0.attn_q_norm.weight": _rand(16), "blk.0.attn_k_norm.weight": _rand(16)}
    meta = {"expert_count": E, "expert_used_count": 2, "expert_feed_forward_length": I, "attention.key_length": 16}
    cp = open_checkpoint(_write(tmp_path / "m.gguf", "qwen3moe", meta, tensors))
    assert cp.config["architectures"] == ["Qwen3MoeForCausalLM"]
    assert (cp.config["num_experts"], cp.config["num_experts_per_tok"], cp.config["moe_intermediate_size"]) == (E, 2, I)
    layer = "model.layers.0"
    expected = {f"{layer}.mlp.gate.weight": tensors["blk.0.ffn_gate_inp.weight"],
                f"{layer}.post_attention_layernorm.weight": tensors["blk.0.ffn_norm.weight"],
                f"{layer}.self_attn.q_norm.weight": tensors["blk.0.attn_q_norm.weight"],
                f"{layer}.self_attn.k_norm.weight": tensors["blk.0.attn_k_norm.weight"]}
    for e in range(E):
        expected[f"{layer}.mlp.experts.{e}.gate_proj.weight"] = tensors["blk.0.ffn_gate_exps.weight"][0][e]
        expected[f"{layer}.mlp.experts.{e}.up_proj.weight"] = tensors["blk.0.ffn_up_exps.weight"][e]
        expected[f"{layer}.mlp.experts.{e}.down_proj.weight"] = tensors["blk.0.ffn_down_exps.weight"][e]
    _assert_maps(cp, expected)
    assert cp.quant_type(f"{layer}.mlp.experts.1.gate_proj.weight") == "Q8_0"


def test_llama_with_experts_is_mixtral(tmp_path):
    meta = {"expert_count": E, "expert_used_count": 2}
    cp = open_checkpoint(_write(tmp_path / "m.gguf", "llama", meta, {**_attention(), **_experts()}))
    assert cp.config["architectures"] == ["MixtralForCausalLM"]
    assert (cp.config["num_local_experts"], cp.config["num_experts_per_tok"]) == (E, 2)
    layer, tensors = "model.layers.0", _experts()
    expected = {f"{layer}.block_sparse_moe.gate.weight": tensors["blk.0.ffn_gate_inp.weight"],
                f"{layer}.post_attention_layernorm.weight": tensors["blk.0.ffn_norm.weight"]}
    for e in range(E):
        expected[f"{layer}.block_sparse_moe.experts.{e}.w1.weight"] = tensors["blk.0.ffn_gate_exps.weight"][0][e]
        expected[f"{layer}.block_sparse_moe.experts.{e}.w3.weight"] = tensors["blk.0.ffn_up_exps.weight"][e]
        expected[f"{layer}.block_sparse_moe.experts.{e}.w2.weight"] = tensors["blk.0.ffn_down_exps.weight"][e]
    _assert_maps(cp, expected)


@pytest.mark.parametrize("arch", ["gemma2", "gemma3"])
def test_gemma_norms_lose_the_converters_plus_one(tmp_path, arch):
    tensors = {**_attention(), "blk.0.post_attention_norm.weight": _rand(H, seed=5), "blk.0.ffn_norm.weight": _rand(H, seed=6),
               "blk.0.post_ffw_norm.weight": _rand(H, seed=7), "blk.0.ffn_gate.weight": _rand(I, H),
               "blk.0.ffn_up.weight": _rand(I, H, seed=8), "blk.0.ffn_down.weight": _rand(H, I)}
    meta = {"attention.sliding_window": 32, "final_logit_softcapping": 30.0, "attention.key_length": 16}
    if arch == "gemma2":
        meta["attn_logit_softcapping"] = 50.0
    cp = open_checkpoint(_write(tmp_path / "m.gguf", arch, meta, tensors))
    cfg = cp.config
    assert cfg["architectures"] == [f"{arch.capitalize()}ForCausalLM"] and cfg["sliding_window"] == 32
    assert cfg["final_logit_softcapping"] == 30.0 and cfg["query_pre_attn_scalar"] == 16
    assert cfg.get("attn_logit_softcapping") == (50.0 if arch == "gemma2" else None)
    layer = "model.layers.0"
    expected = {f"{layer}.post_attention_layernorm.weight": tensors["blk.0.post_attention_norm.weight"] - 1,
                f"{layer}.pre_feedforward_layernorm.weight": tensors["blk.0.ffn_norm.weight"] - 1,
                f"{layer}.post_feedforward_layernorm.weight": tensors["blk.0.post_ffw_norm.weight"] - 1,
                f"{layer}.input_layernorm.weight": tensors["blk.0.attn_norm.weight"] - 1,
                "model.norm.weight": tensors["output_norm.weight"] - 1,
                f"{layer}.mlp.gate_proj.weight": tensors["blk.0.ffn_gate.weight"],
                f"{layer}.mlp.up_proj.weight": tensors["blk.0.ffn_up.weight"],
                f"{layer}.mlp.down_proj.weight": tensors["blk.0.ffn_down.weight"],
                f"{layer}.self_attn.q_proj.weight": tensors["blk.0.attn_q.weight"]}  # not permuted: not llama
    _assert_maps(cp, expected)
    assert cp.config["tie_word_embeddings"] is True


def test_phi3_keeps_its_fused_projections(tmp_path):
    tensors = {k: v for k, v in _attention().items() if ".attn_q." not in k and ".attn_k." not in k and ".attn_v." not in k}
    tensors.update({"blk.0.attn_qkv.weight": _rand(2 * H, H), "blk.0.ffn_up.weight": _rand(2 * I, H),
                    "blk.0.ffn_down.weight": _rand(H, I), "blk.0.ffn_norm.weight": _rand(H),
                    "rope_factors_long.weight": _rand(8), "rope_factors_short.weight": _rand(8)})
    cp = open_checkpoint(_write(tmp_path / "m.gguf", "phi3", {"attention.sliding_window": 64}, tensors))
    assert cp.config["architectures"] == ["Phi3ForCausalLM"] and cp.unmapped() == []
    layer = "model.layers.0"
    assert cp.shape(f"{layer}.self_attn.qkv_proj.weight") == (2 * H, H)
    assert cp.shape(f"{layer}.mlp.gate_up_proj.weight") == (2 * I, H)
    needed = {f"{layer}.self_attn.qkv_proj.weight", f"{layer}.mlp.gate_up_proj.weight", f"{layer}.mlp.down_proj.weight",
              f"{layer}.post_attention_layernorm.weight", f"{layer}.input_layernorm.weight", f"{layer}.self_attn.o_proj.weight",
              "model.embed_tokens.weight", "model.norm.weight"}
    _check_unused(cp, needed)


def test_unsupported_architecture_lists_the_mapped_ones(tmp_path):
    from tokenmill.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="gemma3, llama, phi3, qwen2, qwen2moe, qwen3, qwen3moe"):
        open_checkpoint(_write(tmp_path / "m.gguf", "falcon", {}, {"token_embd.weight": _rand(260, H)}))
