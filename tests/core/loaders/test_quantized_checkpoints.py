"""GPTQ / AWQ int4 and FP8 safetensors checkpoints: config selection, unpacking, packed layers, an engine run.

Each checkpoint is a tiny random Llama whose linears are quantized and packed by int4_packers (the
formats' documented layouts, written independently of the loader). The reference is the same
model with each linear's dequantized weight saved as a float checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig

from harness import run_greedy
from int4_packers import pack_awq, pack_fp8, pack_gptq, quantize
from tiny_models import VOCAB_SIZE, byte_tokenizer, randomize
from tokenmill import LLM, SamplingParams
from tokenmill.errors import ModelLoadError
from tokenmill.loaders import load_model_bundle, open_checkpoint
from tokenmill.models.packed_linear import PackedLinear

CONFIG = dict(vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=256,
              eos_token_id=257, rms_norm_eps=1e-5, architectures=["LlamaForCausalLM"])
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROMPTS = [[5, 9, 13, 2, 77, 31, 8], [40, 41, 42], list(range(50, 62))]
TOLERANCE = 1e-2  # packed vs float logits, relative to the largest: activations rounded to 16 bits
# (method, group, sym, act_order, v1) -> the quantization_config a quantizer writes for it
CASES = {
    "gptq-g128-sym": ("gptq", 128, True, False, True),
    "gptq-g64-asym-v2": ("gptq", 64, False, False, False),
    "gptq-g32-actorder": ("gptq", 32, False, True, True),
    "awq-g128": ("awq", 128, False, False, False),
    "awq-g64": ("awq", 64, False, False, False),
}


def quantization_config(method: str, group: int, sym: bool, act_order: bool, v1: bool) -> dict:
    if method == "awq":
        return {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True, "version": "gemm"}
    return {"quant_method": "gptq", "bits": 4, "group_size": group, "sym": sym, "desc_act": act_order,
            "checkpoint_format": "gptq" if v1 else "gptq_v2"}


def _save(directory: Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    directory.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))
    byte_tokenizer().save_pretrained(directory)
    return directory


def write_pair(root: Path, case: str, seed: int = 0, shared_orders: bool = True) -> tuple[Path, Path]:
    """(quantized checkpoint, float checkpoint of its dequantized weights) for CASES[case] or fp8 cases."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**CONFIG), dtype=torch.float32)
    randomize(model, seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    packed, dense = dict(state), dict(state)
    orders = {}  # (input, K) -> act-order: q/k/v share one, gate/up another
    for name in [n for n in state if n.rsplit(".", 2)[-2] in LINEARS]:
        prefix = name[: -len(".weight")]
        del packed[name]
        if case.startswith("fp8"):
            parts, dense[name] = pack_fp8(state[name], per_channel=case == "fp8-channel")
        else:
            method, group, sym, act_order, v1 = CASES[case]
            shared_input = prefix.rsplit(".", 1)[0] + str(prefix.endswith(("o_proj", "down_proj")))
            shared_input = shared_input if shared_orders else prefix
            order = orders.setdefault((shared_input, state[name].shape[1]), torch.randperm(state[name].shape[1], generator=gen))
            q = quantize(state[name], group, sym, order if act_order else None)
            parts = pack_awq(q) if method == "awq" else pack_gptq(q, v1)
            dense[name] = q.dequantized()
        packed.update({f"{prefix}.{k}": v for k, v in parts.items()})
    qc = {"quant_method": "fp8", "activation_scheme": "dynamic"} if case.startswith("fp8") else quantization_config(*CASES[case])
    config = {**CONFIG, "model_type": "llama", "quantization_config": qc}
    return (_save(root / case, packed, config), _save(root / f"{case}-float", dense, {**CONFIG, "model_type": "llama"}))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantized")
    return {case: write_pair(root, case) for case in [*CASES, "fp8-tensor", "fp8-channel"]}


def load(model, cpu, quantization="auto"):
    plugins, platform = cpu
    return load_model_bundle(str(model), platform=platform, plugins=plugins, dtype="float32", quantization=quantization)


@pytest.mark.parametrize("case", list(CASES))
def test_unpacked_weights_are_the_reference_dequantization(pairs, case):
    quantized, dense = (open_checkpoint(str(p)) for p in pairs[case])
    name = "model.layers.1.mlp.down_proj.weight"
    assert quantized.shape(name) == (128, 256) and quantized.quant_type(name) in ("GPTQ_INT4", "AWQ_INT4")
    assert sorted(quantized.names()) == sorted(dense.names())  # qweight/qzeros/scales/g_idx hidden
    for name in dense.names():
        assert torch.equal(quantized.tensor(name), dense.tensor(name)), name


@pytest.mark.parametrize("case", list(CASES))
def test_packed_int4_layers_match_the_dequantized_model(pairs, cpu, case):
    plugins, platform = cpu
    packed = load(pairs[case][0], cpu)
    assert packed.packed_layers == {"int4_groups": 4 * 2}  # qkv, o, gate_up, down per layer
    orders = [m.input_order is not None for m in packed.model.modules() if isinstance(m, PackedLinear)]
    assert any(orders) == CASES[case][3]  # act-order layers permute their inputs
    reference = load(pairs[case][1], cpu)
    ours = run_greedy(packed, plugins, platform, PROMPTS, 1)
    ref = run_greedy(reference, plugins, platform, PROMPTS, 1)
    for a, b in zip(ours.logits, ref.logits):
        assert (a - b).abs().max() <= TOLERANCE * b.abs().max()


def test_merged_parts_with_different_act_orders_run_dense(tmp_path, cpu):
    plugins, platform = cpu
    quantized, dense = write_pair(tmp_path, "gptq-g32-actorder", shared_orders=False)
    packed = load(quantized, cpu)
    assert packed.packed_layers == {"int4_groups": 2 * 2}  # o and down packed; qkv and gate_up dense
    ours = run_greedy(packed, plugins, platform, PROMPTS, 1)
    ref = run_greedy(load(dense, cpu), plugins, platform, PROMPTS, 1)
    for a, b in zip(ours.logits, ref.logits):
        assert (a - b).abs().max() <= TOLERANCE * b.abs().max()


@pytest.mark.parametrize("case", ["fp8-tensor", "fp8-channel"])
def test_fp8_on_the_cpu_runs_dequantized(pairs, cpu, case):
    quantized, dense = (open_checkpoint(str(p)) for p in pairs[case])
    for name in dense.names():
        assert torch.equal(quantized.tensor(name), dense.tensor(name)), name
    assert load(pairs[case][0], cpu).packed_layers == {}  # the CPU plugin has no fp8 kernels


def test_an_engine_run_on_a_gptq_checkpoint_matches_its_float_twin(pairs):
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    prompts = ["hello there", "abc"]
    runs = []
    for path in pairs["gptq-g128-sym"]:
        llm = LLM(str(path), dtype="float32", kv_cache_memory=16 << 20)
        runs.append([o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)])
        assert llm.engine.has_unfinished_requests() is False
    assert runs[0] == runs[1]


@pytest.mark.parametrize("qc, needle", [
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "'bitsandbytes'"),
    ({"quant_method": "gptq", "bits": 8, "group_size": 128}, "8-bit gptq"),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"}, "'gemv' layout"),
    ({"quant_method": "fp8", "fmt": "e5m2"}, "'e5m2'"),
    ({"load_in_8bit": True}, "no quant_method"),
])
def test_unsupported_quantization_is_refused_by_name(tmp_path, qc, needle):
    _save(tmp_path / "m", {"x": torch.zeros(1)}, {**CONFIG, "quantization_config": qc})
    with pytest.raises(ModelLoadError) as info:
        open_checkpoint(str(tmp_path / "m"))
    message = str(info.value)
    assert needle in message and "gptq (4-bit)" in message and "awq" in message and "fp8" in message


def test_a_missing_part_names_the_tensor(pairs, tmp_path):
    from safetensors.torch import load_file

    source = pairs["awq-g128"][0]
    tensors = load_file(str(source / "model.safetensors"))
    del tensors["model.layers.0.self_attn.k_proj.scales"]
    config = json.loads((source / "config.json").read_text())
    _save(tmp_path / "broken", tensors, config)
    broken = open_checkpoint(str(tmp_path / "broken"))
    with pytest.raises(ModelLoadError, match="model.layers.0.self_attn.k_proj.scales"):
        broken.tensor("model.layers.0.self_attn.k_proj.weight")


def test_block_wise_fp8_loads_dequantized(tmp_path, cpu):
    """DeepSeek-V3 / Qwen3-FP8 style: weight_scale_inv per [32, 64] block (a ragged last block too)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**CONFIG), dtype=torch.float32)
    randomize(model, 0)
    packed, dense = {}, {}
    for name, w in model.state_dict().items():
        if name.rsplit(".", 2)[-2] not in LINEARS:
            packed[name] = dense[name] = w
            continue
        scales = torch.rand(-(-w.shape[0] // 32), -(-w.shape[1] // 64)) * 0.01 + 1e-3
        full = scales.repeat_interleave(32, 0)[: w.shape[0]].repeat_interleave(64, 1)[:, : w.shape[1]]
        codes = (w / full).to(torch.float8_e4m3fn)
        packed[name], packed[name.replace(".weight", ".weight_scale_inv")] = codes, scales
        dense[name] = codes.float() * full
    qc = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [32, 64]}
    path = _save(tmp_path / "fp8-blocks", packed, {**CONFIG, "quantization_config": qc})
    checkpoint = open_checkpoint(str(path))
    for name, want in dense.items():
        assert torch.equal(checkpoint.tensor(name), want), name
    assert load(path, cpu).packed_layers == {}  # no packed scheme takes block scales: dense, and it runs
