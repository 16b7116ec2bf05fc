"""The CPU defaults (--dtype auto, --quantization auto) against transformers in float32, on SmolLM2.

Under the defaults a wide step (the batched prefill) runs the dense GEMM copy in the host's GEMM
dtype (bfloat16 on CPUs with bf16 arithmetic) and narrow steps the native block kernels, so this
is the check that the per-width choice keeps greedy decoding on transformers' tokens: every token
we generate must be transformers' own argmax after the same prefix (the SmolLM2 check's 8 chat
prompts x 64 tokens).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tokenmill import LLM, SamplingParams
from tokenmill.loaders.default_model import default_model_path

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


def test_the_defaults_keep_every_greedy_token_on_transformers_argmax():
    llm = LLM()  # the defaults
    tokenizer = llm.get_tokenizer()
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for q in QUESTIONS]
    params = SamplingParams(temperature=0.0, max_tokens=NUM_NEW, ignore_eos=True)
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    path = default_model_path()
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    agree = total = 0
    with torch.no_grad():
        for prompt, out in zip(prompts, outputs):
            tokens = list(out.outputs[0].token_ids)
            assert len(tokens) == NUM_NEW
            ref = hf(torch.tensor([prompt + tokens[:-1]])).logits[0, len(prompt) - 1 :]  # [NUM_NEW, V]
            agree += (ref.argmax(-1) == torch.tensor(tokens)).sum().item()
            total += NUM_NEW
    print(f"\ndefaults vs transformers float32: top-1 agreement {agree / total:.3f} of {total} tokens")
    assert agree == total
