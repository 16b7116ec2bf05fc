"""The server through the official `openai` client: completions, chat, streaming, n, logprobs, stop."""

from __future__ import annotations

import math

import httpx
import pytest

PROMPT = "The capital of France is"


def _greedy_completion(live_server, prompt, max_tokens=8, **extra):
    return live_server.client().completions.create(model=live_server.model, prompt=prompt, max_tokens=max_tokens,
                                                   temperature=0, **extra)


def test_completion_usage_and_greedy_logprobs(live_server):
    tokenizer = live_server.core.tokenizer
    out = _greedy_completion(live_server, PROMPT, logprobs=2)
    choice = out.choices[0]
    assert out.model == live_server.model and out.object == "text_completion"
    assert out.usage.prompt_tokens == len(tokenizer(PROMPT).input_ids)
    assert out.usage.completion_tokens == len(choice.logprobs.tokens) <= 8
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert choice.finish_reason in ("stop", "length")
    assert "".join(choice.logprobs.tokens) == choice.text
    for chosen, top in zip(choice.logprobs.token_logprobs, choice.logprobs.top_logprobs):
        # greedy: the chosen token is the most likely one, and the top-2 are a distribution's head
        assert chosen == pytest.approx(max(top.values()))
        assert all(lp <= 0 for lp in top.values()) and sum(math.exp(lp) for lp in top.values()) <= 1 + 1e-4


def test_prompt_as_list_and_token_ids_give_the_same_text(live_server):
    ids = live_server.core.tokenizer(PROMPT).input_ids
    by_text = _greedy_completion(live_server, PROMPT).choices[0].text
    by_ids = _greedy_completion(live_server, ids).choices[0].text
    batch = _greedy_completion(live_server, [PROMPT, "Once upon a time"])
    assert by_ids == by_text
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[0].text == by_text
    assert batch.usage.prompt_tokens == len(ids) + len(live_server.core.tokenizer("Once upon a time").input_ids)


def test_echo_with_logprobs_covers_the_prompt(live_server):
    out = _greedy_completion(live_server, PROMPT, max_tokens=4, echo=True, logprobs=1)
    choice = out.choices[0]
    assert choice.text.startswith(PROMPT)
    assert len(choice.logprobs.tokens) == out.usage.prompt_tokens + out.usage.completion_tokens
    assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.top_logprobs[0] is None
    assert all(lp is not None and lp <= 0 for lp in choice.logprobs.token_logprobs[1:])


def test_stop_string_ends_the_text_before_it(live_server):
    full = live_server.client().completions.create(model=live_server.model, prompt=PROMPT, max_tokens=12, temperature=0,
                                                   extra_body={"ignore_eos": True}).choices[0].text
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    out = live_server.client().completions.create(model=live_server.model, prompt=PROMPT, max_tokens=12, temperature=0,
                                                  stop=[stop], extra_body={"ignore_eos": True})
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].text == full[: full.index(stop)]


def test_chat_completion_uses_the_chat_template(live_server):
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    expected_prompt = live_server.core.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                                     tokenize=False)
    n_prompt = len(live_server.core.tokenizer(expected_prompt, add_special_tokens=False).input_ids)
    out = live_server.client().chat.completions.create(model=live_server.model, messages=messages, max_tokens=8, temperature=0)
    assert out.object == "chat.completion" and out.choices[0].message.role == "assistant"
    assert out.usage.prompt_tokens == n_prompt
    assert 1 <= out.usage.completion_tokens <= 8
    same = live_server.client().chat.completions.create(model=live_server.model, messages=messages, max_completion_tokens=8,
                                                        temperature=0)
    assert same.choices[0].message.content == out.choices[0].message.content


def test_streamed_chat_deltas_equal_the_non_streamed_text(live_server):
    client = live_server.client()
    kwargs = dict(model=live_server.model, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=12,
                  temperature=0.9, seed=1234)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == []
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")  # cached_tokens differ: the second reuses the first
    assert [getattr(chunks[-1].usage, k) for k in counts] == [getattr(whole.usage, k) for k in counts]


def test_streamed_completion_matches_the_non_streamed_one(live_server):
    client = live_server.client()
    whole = client.completions.create(model=live_server.model, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=1)
    chunks = list(client.completions.create(model=live_server.model, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=1,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    streamed_lps = [lp for c in chunks for lp in c.choices[0].logprobs.token_logprobs]
    assert streamed_lps == pytest.approx(whole.choices[0].logprobs.token_logprobs)


def test_n_returns_distinct_indexed_choices(live_server):
    client = live_server.client()
    chat = client.chat.completions.create(model=live_server.model, messages=[{"role": "user", "content": "Name a colour."}],
                                          n=2, max_tokens=8, temperature=1.0, seed=7)
    assert sorted(c.index for c in chat.choices) == [0, 1]
    assert 2 <= chat.usage.completion_tokens <= 16
    comp = client.completions.create(model=live_server.model, prompt=[PROMPT, "Hi"], n=2, max_tokens=4, temperature=1.0, seed=3)
    assert [c.index for c in sorted(comp.choices, key=lambda c: c.index)] == [0, 1, 2, 3]
    again = client.chat.completions.create(model=live_server.model, messages=[{"role": "user", "content": "Name a colour."}],
                                           n=2, max_tokens=8, temperature=1.0, seed=7)
    assert [c.message.content for c in again.choices] == [c.message.content for c in chat.choices]


def test_chat_logprobs_are_ranked_and_greedy_picks_the_top(live_server):
    out = live_server.client().chat.completions.create(
        model=live_server.model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=6, temperature=0,
        logprobs=True, top_logprobs=3)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    assert "".join(item.token for item in content) == out.choices[0].message.content
    for item in content:
        tops = [t.logprob for t in item.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert item.token == item.top_logprobs[0].token and item.logprob == pytest.approx(tops[0])
        assert bytes(item.bytes).decode() == item.token


def test_models_tokenize_detokenize_health_version(live_server):
    client = live_server.client()
    models = client.models.list()
    assert [m.id for m in models.data] == [live_server.model]
    headers = live_server.headers
    tok = httpx.post(live_server.url + "/tokenize", json={"prompt": PROMPT}, headers=headers).json()
    assert tok["tokens"] == live_server.core.tokenizer(PROMPT).input_ids and tok["count"] == len(tok["tokens"])
    detok = httpx.post(live_server.url + "/detokenize", json={"tokens": tok["tokens"]}, headers=headers).json()
    assert detok["prompt"] == live_server.core.tokenizer.decode(tok["tokens"])
    assert httpx.get(live_server.url + "/health").status_code == 200
    assert httpx.get(live_server.url + "/version").json()["version"]
