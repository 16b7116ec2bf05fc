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
