"""GGUF mixture-of-experts checkpoints: stacked ffn_*_exps tensors, expert metadata, packed experts.

A tiny Mixtral (GGUF architecture "llama" with experts) and Qwen2-MoE (shared expert) from
transformers are written as GGUF the way llama.cpp's converter lays them out: experts stacked
[E, rows, cols] in Q8_0 / Q4_1, q/k rows permuted for llama. Loaded densely, every per-expert
tensor must equal gguf's own dequantization of its stack, and the model must give the logits
of the same dequantized weights loaded from safetensors (whose loader test_moe_equivalence
checks against transformers); loaded with --quantization auto, the experts run packed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, dequantize, quants
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from harness import cpu_plugins, run_greedy  # noqa: E402
from moe_tiny_models import MOE_CONFIGS, write_tiny_moe_model  # noqa: E402

from tokenmill.loaders import load_model_bundle, open_checkpoint  # noqa: E402
from tokenmill.models.moe import PackedExperts  # noqa: E402

# llama.cpp's names for the dense tensors this writer emits (the loader reads them through gguf's tables)
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
_PER_LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
              "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
              "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj",
              "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
GGUF_ARCH = {"mixtral": "llama", "qwen2_moe": "qwen2moe"}
STACK_TYPES = {"gate": Q.Q8_0, "up": Q.Q4_1, "down": Q.Q8_0}
_EXPERT_PART = {"w1": "gate", "w3": "up", "w2": "down", "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}
_SINGLE = {"gate": "ffn_gate_inp", "shared_expert_gate": "ffn_gate_inp_shexp", "shared_expert.gate_proj": "ffn_gate_shexp",
           "shared_expert.up_proj": "ffn_up_shexp", "shared_expert.down_proj": "ffn_down_shexp"}


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter for llama q/k: each head's NeoX halves become interleaved pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _to_gguf(hf_dir: Path, family: str, path: Path) -> None:
    cfg = json.loads((hf_dir / "config.json").read_text())
    with safe_open(str(hf_dir / "model.safetensors"), "pt") as f:
        tensors = {name: f.get_tensor(name).numpy() for name in f.keys()}
    inverse = {v: k for k, v in _PER_LAYER.items()}
    out, stacks = {}, {}
    for name, w in tensors.items():
        glob = {v: k for k, v in _GLOBAL.items()}.get(name)
        if glob:
            out[glob] = (w, Q.F32)
            continue
        _, _, layer, rest = name.split(".", 3)
        module, leaf = rest.rsplit(".", 1)
        block = module.split(".", 1)[1] if module.startswith(("mlp.", "block_sparse_moe.")) else None
        if block and block.startswith("experts."):
            _, expert, part = block.split(".")
            stacks.setdefault((layer, _EXPERT_PART[part]), {})[int(expert)] = w
        elif block in _SINGLE:
            out[f"blk.{layer}.{_SINGLE[block]}.{leaf}"] = (w, Q.F32)
        else:
            if GGUF_ARCH[family] == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
                w = _permute(w, cfg["num_attention_heads"] if "q_proj" in module else cfg["num_key_value_heads"])
            out[f"blk.{layer}.{inverse[module]}.{leaf}"] = (w, Q.F32)
    for (layer, part), experts in stacks.items():
        stack = np.stack([experts[e] for e in sorted(experts)])  # [E, rows, cols]
        out[f"blk.{layer}.ffn_{part}_exps.weight"] = (quants.quantize(stack, STACK_TYPES[part]), STACK_TYPES[part])
    _write(path, GGUF_ARCH[family], cfg, out)


def _write(path: Path, arch: str, cfg: dict, tensors: dict) -> None:
    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_freq_base(cfg.get("rope_theta") or cfg.get("rope_parameters", {}).get("rope_theta", 1e6))
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_expert_count(cfg.get("num_local_experts") or cfg.get("num_experts"))
    writer.add_expert_used_count(cfg["num_experts_per_tok"])
    if "moe_intermediate_size" in cfg:
        writer.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        writer.add_expert_shared_feed_forward_length(cfg["shared_expert_intermediate_size"])
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def gguf_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf_moe")
    out = {}
    for i, family in enumerate(GGUF_ARCH):
        hf_dir = write_tiny_moe_model(family, root / family, seed=20 + i)
        _to_gguf(hf_dir, family, root / f"{family}.gguf")
        out[family] = (hf_dir, root / f"{family}.gguf")
    return out


@pytest.fixture(scope="module")
def prompts():
    gen = torch.Generator().manual_seed(2)
    return [torch.randint(0, 256, (n,), generator=gen).tolist() for n in (7, 20)]


@pytest.mark.parametrize("family", list(GGUF_ARCH))
def test_experts_are_slices_of_their_stack(family, gguf_models):
    checkpoint = open_checkpoint(str(gguf_models[family][1]))
    assert checkpoint.config["architectures"] == MOE_CONFIGS[family].architectures
    prefix = "block_sparse_moe" if family == "mixtral" else "mlp"
    gate = "w1" if family == "mixtral" else "gate_proj"
    stack = next(t for t in checkpoint.reader.tensors if t.name == "blk.1.ffn_gate_exps.weight")
    whole = dequantize(stack.data, stack.tensor_type)  # [E, I, H]
    for e in (0, whole.shape[0] - 1):
        name = f"model.layers.1.{prefix}.experts.{e}.{gate}.weight"
        assert checkpoint.quant_type(name) == "Q8_0"
        assert torch.equal(checkpoint.tensor(name), torch.from_numpy(np.ascontiguousarray(whole[e])))
    assert checkpoint.unmapped() == []
    with safe_open(str(gguf_models[family][0] / "model.safetensors"), "pt") as f:  # the weights before GGUF
        # every original tensor is found under its own name (the loader answers each spelling gguf lists)
        assert len(f.keys()) == len(checkpoint.names())
        for name in f.keys():  # within a 4-bit step of the original: a swapped or misplaced tensor is not
            original = f.get_tensor(name)
            err = (checkpoint.tensor(name) - original).abs().max().item()
            assert err <= 0.07 * original.abs().max().item(), f"{name}: max error {err:.3g}"


@pytest.mark.parametrize("family", list(GGUF_ARCH))
def test_gguf_moe_matches_its_dequantized_safetensors(family, gguf_models, prompts, tmp_path):
    plugins, platform = cpu_plugins()
    hf_dir, gguf_path = gguf_models[family]
    checkpoint = open_checkpoint(str(gguf_path))
    twin = tmp_path / "dequantized"
    twin.mkdir()
    with safe_open(str(hf_dir / "model.safetensors"), "pt") as f:  # the twin keeps the original names
        names = list(f.keys())
    save_file({n: checkpoint.tensor(n).contiguous() for n in names}, str(twin / "model.safetensors"))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(hf_dir / name, twin / name)
    kw = dict(platform=platform, plugins=plugins, dtype="float32")
    from_gguf = load_model_bundle(str(gguf_path), tokenizer=str(hf_dir), **kw)
    from_st = load_model_bundle(str(twin), **kw)
    got, want = run_greedy(from_gguf, plugins, platform, prompts, 4), run_greedy(from_st, plugins, platform, prompts, 4)
    assert got.tokens == want.tokens
    assert max((g - w).abs().max().item() for g, w in zip(got.logits, want.logits)) <= 1e-4
    packed = load_model_bundle(str(gguf_path), tokenizer=str(hf_dir), quantization="auto", **kw)
    experts = [m for m in packed.model.modules() if isinstance(m, PackedExperts)]
    assert len(experts) == 2 and {m.method.scheme for m in experts} == {"int8"}  # Q8_0 and Q4_1 parts: int8 holds both
    logits = run_greedy(packed, plugins, platform, prompts, 1).logits
    for g, w in zip(logits, want.logits):
        assert ((g - w[: len(g)]).norm() / w[: len(g)].norm()).item() < 0.03
