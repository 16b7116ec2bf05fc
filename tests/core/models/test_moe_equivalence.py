"""The mixture-of-experts families against transformers on tiny random weights (float32: 1e-4, same greedy tokens).

Routing is where an MoE port goes wrong (softmax before or after top-k, renormalisation, the shared
expert's sigmoid gate, which layers are dense): any of those changes the logits far beyond 1e-4.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness import run_greedy
from moe_tiny_models import MOE_CONFIGS, write_tiny_moe_model
from test_model_equivalence import NUM_NEW, PROMPT_LENS, _hf_greedy, _reference_logits
from tokenmill.loaders import load_model_bundle
from tokenmill.models.moe import SparseMoeBlock


@pytest.fixture(scope="module")
def moe_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_moe")
    return {family: write_tiny_moe_model(family, root / family, seed=10 + i) for i, family in enumerate(MOE_CONFIGS)}


@pytest.fixture(scope="module")
def prompts():
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (n,), generator=gen).tolist() for n in PROMPT_LENS]


@pytest.mark.parametrize("family", list(MOE_CONFIGS))
def test_moe_matches_transformers(family, moe_dirs, prompts, cpu):
    plugins, platform = cpu
    bundle = load_model_bundle(str(moe_dirs[family]), platform=platform, plugins=plugins, dtype="float32")
    blocks = [m for m in bundle.model.modules() if isinstance(m, SparseMoeBlock)]
    assert len(blocks) == sum(bundle.arch.moe.sparse_layers) > 0
    run = run_greedy(bundle, plugins, platform, prompts, NUM_NEW)
    hf = AutoModelForCausalLM.from_pretrained(moe_dirs[family], dtype=torch.float32).eval()
    worst = 0.0
    for prompt, tokens, logits in zip(prompts, run.tokens, run.logits):
        ref = _reference_logits(hf, prompt, tokens)
        assert ref.shape == logits.shape
        worst = max(worst, (ref - logits).abs().max().item())
        assert tokens == _hf_greedy(hf, prompt, NUM_NEW), f"{family}: greedy continuation differs"
    print(f"\nmax |logit diff| {family} float32: {worst:.3g}")
    assert worst <= 1e-4, f"{family}: max logit difference {worst} > 1e-4"


def test_qwen3_moe_dense_layers_follow_mlp_only_layers(moe_dirs, cpu):
    plugins, platform = cpu
    bundle = load_model_bundle(str(moe_dirs["qwen3_moe"]), platform=platform, plugins=plugins, dtype="float32")
    assert bundle.arch.moe.sparse_layers == (True, False)
    assert isinstance(bundle.model.model.layers[0].mlp, SparseMoeBlock)
    assert not isinstance(bundle.model.model.layers[1].mlp, SparseMoeBlock)


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_packed_experts_run_through_the_linear_methods(quantization, moe_dirs, prompts, cpu):
    """--quantization int4/int8 packs every expert (not the router). int8 stays within 2% of the dense
    logits; int4 of these random weights is ~30% off (every decoder linear at 4 bits), so for it the
    bound only catches a broken path, and test_packed_experts_exact_on_the_grid checks it exactly."""
    from tokenmill.models.moe import PackedExperts, Router

    plugins, platform = cpu
    dense = load_model_bundle(str(moe_dirs["qwen2_moe"]), platform=platform, plugins=plugins, dtype="float32")
    packed = load_model_bundle(str(moe_dirs["qwen2_moe"]), platform=platform, plugins=plugins, dtype="float32",
                               quantization=quantization)
    experts = [m for m in packed.model.modules() if isinstance(m, PackedExperts)]
    assert len(experts) == 2 and all(m.method.scheme == quantization for m in experts)
    assert all(isinstance(m.weight, torch.nn.Parameter) for m in packed.model.modules() if isinstance(m, Router))
    want = run_greedy(dense, plugins, platform, prompts[:2], 1).logits
    got = run_greedy(packed, plugins, platform, prompts[:2], 1).logits
    for g, w in zip(got, want):
        rel = ((g - w).norm() / w.norm()).item()
        assert rel < (0.02 if quantization == "int8" else 0.6), f"{quantization}: relative logit error {rel:.3g}"


@pytest.mark.parametrize("scheme", ["int4", "int8"])
def test_packed_experts_exact_on_the_grid(scheme, cpu):
    """Expert weights the scheme holds exactly: PackedExperts equals the dense fused_moe up to the
    kernels' activation rounding (tolerances.LINEAR), with ragged loads and empty experts."""
    from tokenmill.models.moe import ExpertStack
    from tokenmill.ops import fused_moe as moe_ops
    from tokenmill.testing.moe_cases import make_moe_case
    from tokenmill.testing.test_linear_methods import exact_int4_weight, exact_int8_weight
    from tokenmill.testing.tolerances import LINEAR

    plugins, platform = cpu
    method = plugins.linear_method(platform, scheme)
    exact = exact_int4_weight if scheme == "int4" else exact_int8_weight
    gen = torch.Generator().manual_seed(3)
    experts, hidden, inter = 8, 64, 32
    stack = ExpertStack(experts, hidden, inter, "experts", ("gate_proj", "up_proj", "down_proj"))
    stack.gate_up_proj.data = torch.cat([exact(2 * inter, hidden, gen) for _ in range(experts)])
    stack.down_proj.data = torch.cat([exact(hidden, inter, gen) for _ in range(experts)])
    case = make_moe_case(13, experts, hidden, inter, 2, torch.float32, num_empty=3)
    packed = stack.pack_with(method)
    got = packed.run(case.x, case.topk_weights, case.topk_ids, None)
    want = moe_ops.fused_moe(case.x, stack.w13(), stack.w2(), case.topk_weights, case.topk_ids)
    # two chained layers: each rounds its activations once
    assert (got - want).abs().max().item() <= 2 * LINEAR[torch.float32] * want.abs().max().item()
