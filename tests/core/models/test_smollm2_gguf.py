"""The embedded SmolLM2-135M-Instruct GGUF against transformers' own GGUF loader, in float32.

Checks: every dequantized tensor equals transformers' (exactly); the merged model parameters are
those tensors; our cached tokenizer equals the one transformers builds from the GGUF; greedy chat
continuations of 8 prompts x 64 tokens are identical to transformers' generate() on the same weights.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from harness import run_greedy
from tokenmill.loaders import load_model_bundle, open_checkpoint
from tokenmill.loaders.default_model import default_model_path
from tokenmill.models import checkpoint_layout
from tokenmill.tokenizer import ENV_CACHE_DIR, load_tokenizer

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis in one sentence.",
    "List three prime numbers.",
    "How do I reverse a list in Python?",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue?",
    "Give me a tip for better sleep.",
]
NUM_NEW = 64
LOGIT_TOLERANCE = 1e-3  # float32 through 30 layers; seen: ~6e-5
PACKED_TOP1_AGREEMENT = 0.99  # share of greedy tokens that are also transformers' argmax; seen: 1.000
PACKED_LOGIT_TOLERANCE = 0.1  # seen: ~0.01 (the GGUF blocks repack exactly; ~16-bit activations)


@pytest.fixture(scope="module")
def loaded(cpu, tmp_path_factory):
    """(bundle, tokenizer built fresh from the GGUF); the bundle's tokenizer comes from the cache."""
    plugins, platform = cpu
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_CACHE_DIR, str(tmp_path_factory.mktemp("tokenizer-cache")))
        fresh = load_tokenizer(default_model_path())  # transformers' GGUF conversion, then cached
        bundle = load_model_bundle(None, platform=platform, plugins=plugins, dtype="float32")
    return bundle, fresh


@pytest.fixture(scope="module")
def hf():
    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="module")
def chat_prompts(loaded):
    _, tokenizer = loaded
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for q in QUESTIONS
    ]


def test_dequantized_tensors_equal_transformers(hf):
    checkpoint = open_checkpoint(None)
    reference = hf.state_dict()
    assert set(checkpoint.names()) == set(reference) - {"lm_head.weight"}  # tied: no output.weight
    for name in checkpoint.names():
        assert torch.equal(checkpoint.tensor(name), reference[name]), name


def test_model_parameters_are_the_merged_tensors(loaded, hf):
    bundle, _ = loaded
    reference = hf.state_dict()
    params = dict(bundle.model.named_parameters())
    for name, parts in checkpoint_layout(bundle.model, bundle.arch).items():
        assert torch.equal(params[name], torch.cat([reference[n] for n, _ in parts])), name
    assert bundle.model.lm_head.weight is bundle.model.model.embed_tokens.weight
    assert bundle.num_params == sum(p.numel() for p in hf.parameters())


def test_cached_tokenizer_equals_the_gguf_one(loaded, chat_prompts):
    bundle, fresh = loaded
    assert bundle.tokenizer.chat_template == fresh.chat_template and fresh.chat_template
    for question, ids in zip(QUESTIONS, chat_prompts):
        messages = [{"role": "user", "content": question}]
        ours = bundle.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        assert ours == ids
        assert bundle.tokenizer.decode(ids) == fresh.decode(ids)
    assert bundle.eos_token_ids == [fresh.eos_token_id] == [2]


def test_greedy_chat_matches_transformers(loaded, hf, chat_prompts, cpu, record_property):
    bundle, _ = loaded
    plugins, platform = cpu
    run = run_greedy(bundle, plugins, platform, chat_prompts, NUM_NEW)
    reference = _hf_greedy(hf, chat_prompts)
    for i, (ours, theirs) in enumerate(zip(run.tokens, reference)):
        assert ours == theirs, f"prompt {i}: {bundle.tokenizer.decode(ours)!r} != {bundle.tokenizer.decode(theirs)!r}"
    worst = 0.0
    with torch.no_grad():
        for prompt, tokens, logits in zip(chat_prompts, run.tokens, run.logits):
            ref = hf(torch.tensor([prompt + tokens[:-1]])).logits[0]
            worst = max(worst, (ref - logits).abs().max().item())
    record_property("max_logit_diff", worst)
    print(f"\nmax |logit diff| SmolLM2-135M GGUF float32: {worst:.3g}")
    assert worst <= LOGIT_TOLERANCE


def _hf_greedy(hf, prompts: list[list[int]]) -> list[list[int]]:
    """transformers' greedy continuations: one batched generate(), left-padded, with an explicit mask
    (without one, generate() would also mask the prompts' own <|im_end|>, which is the pad token)."""
    config = hf.generation_config
    config.eos_token_id, config.pad_token_id = None, 2  # never stop early: compare all 64 tokens
    config.do_sample, config.max_new_tokens = False, NUM_NEW
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[2] * (width - len(p)) + p for p in prompts])  # [B, width]
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, generation_config=config)
    return out[:, width:].tolist()


def test_packed_weights_stay_close_to_transformers(hf, chat_prompts, cpu, record_property):
    """--quantization auto runs the Q4_1 layers and the Q8_0 head on the plugin's native block kernels,
    straight from the GGUF's own blocks, with activations rounded to ~16 bits inside the kernel:
    not bit-exact, so its greedy tokens must be transformers' top choice (almost) everywhere and its
    logits close."""
    plugins, platform = cpu
    bundle = load_model_bundle(None, platform=platform, plugins=plugins, dtype="float32", quantization="auto")
    assert bundle.packed_layers == {"int4": 4 * bundle.arch.num_layers, "int8": 1}
    run = run_greedy(bundle, plugins, platform, chat_prompts, NUM_NEW)
    agree, total, worst = 0, 0, 0.0
    with torch.no_grad():
        for prompt, tokens, logits in zip(chat_prompts, run.tokens, run.logits):
            ref = hf(torch.tensor([prompt + tokens[:-1]])).logits[0]
            decoded = slice(len(prompt) - 1, None)  # the rows that chose a generated token
            agree += (ref[decoded].argmax(-1) == torch.tensor(tokens)).sum().item()
            total += len(tokens)
            worst = max(worst, (ref - logits).abs().max().item())
    record_property("top1_agreement", agree / total)
    print(f"\npacked int4/int8 vs transformers: top-1 agreement {agree / total:.3f}, max |logit diff| {worst:.3g}")
    assert agree / total >= PACKED_TOP1_AGREEMENT
    assert worst <= PACKED_LOGIT_TOLERANCE
