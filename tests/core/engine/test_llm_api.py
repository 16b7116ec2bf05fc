"""The offline LLM API: vLLM's names and shapes, prompt order, chat, and clean refusal of bad input."""

from __future__ import annotations

import pytest

from tokenmill import LLM, SamplingParams
from tokenmill.errors import RequestError


@pytest.fixture(scope="module")
def llm():
    return LLM(dtype="float32", kv_cache_memory=64 << 20)


def test_generate_returns_one_output_per_prompt_in_order(llm):
    prompts = ["The capital of France is", "1, 2, 3, 4,", "Once upon a time"]
    params = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)
    outputs = llm.generate(prompts, params, use_tqdm=False)
    assert [o.prompt for o in outputs] == prompts
    tok = llm.get_tokenizer()
    for prompt, out in zip(prompts, outputs):
        assert out.prompt_token_ids == tok(prompt).input_ids
        completion = out.outputs[0]
        assert len(completion.token_ids) == 5 and completion.finish_reason == "length"
        assert completion.text == tok.decode(completion.token_ids, skip_special_tokens=True)
        assert completion.logprobs is None


def test_chat_uses_the_template_and_answers(llm):
    out = llm.chat([{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                   SamplingParams(temperature=0.0, max_tokens=16), use_tqdm=False)[0]
    assert "Paris" in out.outputs[0].text
    assert out.outputs[0].finish_reason == "stop"


def test_bad_prompt_in_a_batch_runs_nothing(llm):
    with pytest.raises(RequestError):
        llm.generate(["fine", ""], SamplingParams(max_tokens=3), use_tqdm=False)
    assert not llm.engine.has_unfinished_requests()
    assert llm.engine.kv.num_used_blocks == 0
    assert len(llm.generate("still works", SamplingParams(max_tokens=3), use_tqdm=False)) == 1
