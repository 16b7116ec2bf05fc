"""logit_bias, bad_words and allowed_token_ids change the output as asked, checked against the
unconstrained greedy output; usage reports the prompt tokens the prefix cache served."""

from __future__ import annotations

import openai
import pytest

PROMPT = "The capital of France is"


def _complete(live_server, max_tokens=6, **extra):
    return live_server.client().completions.create(model=live_server.model, prompt=PROMPT, max_tokens=max_tokens,
                                                   temperature=0, extra_body={"ignore_eos": True, **extra})


def _ids(live_server, text):
    return live_server.core.tokenizer(text, add_special_tokens=False).input_ids


def test_logit_bias_pushes_tokens_down_and_up(live_server):
    free = _complete(live_server).choices[0].text
    first = _ids(live_server, free)[0]
    banned = _complete(live_server, logit_bias={str(first): -100}).choices[0].text
    assert _ids(live_server, banned)[0] != first
    forced_id = _ids(live_server, " zebra")[0]
    forced = _complete(live_server, max_tokens=3, logit_bias={str(forced_id): 100}).choices[0].text
    assert _ids(live_server, forced) == [forced_id] * 3


def test_bad_words_never_appear(live_server):
    free = _complete(live_server, max_tokens=8).choices[0].text
    word = free.split()[0]
    out = _complete(live_server, max_tokens=8, bad_words=[word]).choices[0].text
    assert word not in out.split() and out != free


def test_allowed_token_ids_limit_the_vocabulary(live_server):
    allowed = sorted({*_ids(live_server, " yes"), *_ids(live_server, " no"), *_ids(live_server, " maybe")})
    free = _complete(live_server).choices[0].text
    out = _complete(live_server, allowed_token_ids=allowed).choices[0].text
    assert set(_ids(live_server, out)) <= set(allowed) and out != free


def test_bad_sampling_fields_are_400s(live_server):
    for extra, words in (({"logit_bias": {"x": 1}}, "logit_bias"), ({"logit_bias": {"5": 500}}, "logit_bias"),
                         ({"allowed_token_ids": [10**9]}, "allowed_token_ids"), ({"bad_words": [""]}, "bad_words")):
        with pytest.raises(openai.BadRequestError, match=words):
            _complete(live_server, max_tokens=2, **extra)


def test_cached_tokens_in_usage(live_server):
    prompt = "Here is a long and entirely unique preamble about lighthouses and their keepers. " * 4
    messages = [{"role": "user", "content": prompt}]
    client = live_server.client()
    first = client.chat.completions.create(model=live_server.model, messages=messages, max_tokens=2, temperature=0)
    second = client.chat.completions.create(model=live_server.model, messages=messages, max_tokens=2, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    # the first may already reuse the template's system prompt from earlier requests; the second reuses more
    assert first.usage.prompt_tokens_details.cached_tokens < cached < second.usage.prompt_tokens
    assert cached % live_server.core.args.block_size == 0
    legacy = live_server.client().completions.create(model=live_server.model, prompt=prompt, max_tokens=2)
    assert legacy.usage.prompt_tokens_details is not None
