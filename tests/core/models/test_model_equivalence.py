"""Every supported architecture against transformers on the same tiny random weights.

Tolerances (max |logit difference| over every position of 5 ragged prompts + 32 greedy steps):
float32 1e-4 (seen: <7e-6); bfloat16 0.3 (seen: 0.07-0.17; logits have std ~1.2 and values up to
~5, where one bf16 ulp is 0.03; both sides round at different points). In float32 the greedy
continuation must be identical to transformers' generate(). In bfloat16 the two can break a
near-tie differently, so each of our greedy picks must be within the bf16 tolerance of the best
logit transformers gives on the same prefix.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness import run_greedy
from tiny_models import CONFIGS, LOAD_ARGS, write_tiny_model
from tokenmill.loaders import load_model_bundle

TOLERANCE = {"float32": 1e-4, "bfloat16": 0.3}
NUM_NEW = 32
PROMPT_LENS = (5, 17, 1, 33, 9)  # ragged, and crossing 16-token block boundaries


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {family: write_tiny_model(family, root / family, seed=i) for i, family in enumerate(CONFIGS)}


@pytest.fixture(scope="module")
def prompts():
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (n,), generator=gen).tolist() for n in PROMPT_LENS]


def _reference_logits(hf, prompt: list[int], generated: list[int]) -> torch.Tensor:
    """transformers' float32 logits [len(prompt) + n - 1, V] at every position of prompt + our tokens."""
    with torch.no_grad():
        return hf(torch.tensor([prompt + generated[:-1]])).logits[0].float()


def _hf_greedy(hf, prompt: list[int], num_new: int) -> list[int]:
    config = hf.generation_config
    config.eos_token_id, config.pad_token_id = None, 0  # never stop early: compare all tokens
    config.do_sample, config.max_new_tokens = False, num_new
    ids = torch.tensor([prompt])  # an explicit mask, or generate() masks prompt tokens equal to pad_token_id
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("family", list(CONFIGS))
def test_matches_transformers(family, dtype, tiny_dirs, prompts, cpu, record_property):
    plugins, platform = cpu
    bundle = load_model_bundle(str(tiny_dirs[family]), platform=platform, plugins=plugins, dtype=dtype,
                               **LOAD_ARGS.get(family, {}))
    run = run_greedy(bundle, plugins, platform, prompts, NUM_NEW)
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs[family], dtype=getattr(torch, dtype),
                                              attn_implementation="eager").eval()  # eager: soft-capping too
    worst, tol = 0.0, TOLERANCE[dtype]
    for prompt, tokens, logits in zip(prompts, run.tokens, run.logits):
        ref = _reference_logits(hf, prompt, tokens)
        assert ref.shape == logits.shape
        worst = max(worst, (ref - logits).abs().max().item())
        if dtype == "float32":
            assert tokens == _hf_greedy(hf, prompt, NUM_NEW), f"{family}: greedy continuation differs"
        else:
            steps = ref[len(prompt) - 1 :]  # [NUM_NEW, V]: the logits each of our picks came from
            picked = steps.gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1)
            assert (steps.max(dim=1).values - picked).max().item() <= tol, f"{family}: a greedy pick is off"
    record_property("max_logit_diff", worst)
    print(f"\nmax |logit diff| {family} {dtype}: {worst:.3g}")
    assert worst <= tol, f"{family} {dtype}: max logit difference {worst} > {tol}"
