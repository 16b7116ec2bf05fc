"""Sampling through the whole engine: seeds across batches, n > 1, stop strings, top_k=1."""

from __future__ import annotations

from tokenmill.sampling.params import SamplingParams


def _texts(engine, tools, items):
    """items: (request id, prompt text, params); returns the finished RequestOutputs by id."""
    for request_id, text, params in items:
        engine.add_request(request_id, tools.chat_ids(engine, text), params)
    return tools.run_all(engine)


def test_same_seed_same_text_in_different_batches(make_engine, tools):
    engine = make_engine()
    seeded = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_tokens=24)
    alone = _texts(engine, tools, [("x", tools.prompts[0], seeded)])["x"].outputs[0].text
    crowd = [(f"o{i}", p, SamplingParams(temperature=1.0, max_tokens=24)) for i, p in enumerate(tools.prompts[1:7])]
    mixed = _texts(engine, tools, crowd + [("x2", tools.prompts[0], seeded)])
    assert mixed["x2"].outputs[0].text == alone


def test_n_gives_distinct_samples(make_engine, tools):
    engine = make_engine()
    params = SamplingParams(n=4, temperature=1.0, max_tokens=16, seed=7)
    out = _texts(engine, tools, [("n", "Invent a name for a new colour.", params)])["n"]
    assert [c.index for c in out.outputs] == [0, 1, 2, 3]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    assert engine.kv.num_used_blocks == 0


def test_stop_strings_never_appear(make_engine, tools):
    engine = make_engine()
    greedy = SamplingParams(temperature=0.0, max_tokens=40)
    full = _texts(engine, tools, [("full", tools.prompts[2], greedy)])["full"].outputs[0].text
    words = full.split()
    assert len(words) > 6, full
    stop = words[4]  # a word that greedy decoding is known to produce
    params = SamplingParams(temperature=0.0, max_tokens=40, stop=[stop])
    cut = _texts(engine, tools, [("cut", tools.prompts[2], params)])["cut"].outputs[0]
    assert stop not in cut.text
    assert cut.finish_reason == "stop" and cut.stop_reason == stop
    assert full.startswith(cut.text)


def test_top_k_one_equals_greedy(make_engine, tools):
    engine = make_engine()
    greedy = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    top1 = SamplingParams(temperature=0.8, top_k=1, max_tokens=20, ignore_eos=True, seed=3)
    out = _texts(engine, tools, [("g", tools.prompts[5], greedy), ("k", tools.prompts[5], top1)])
    assert out["g"].outputs[0].token_ids == out["k"].outputs[0].token_ids


def test_logprobs_and_prompt_logprobs(make_engine, tools):
    engine = make_engine()
    params = SamplingParams(temperature=0.0, max_tokens=6, logprobs=3, prompt_logprobs=2, ignore_eos=True)
    ids = tools.chat_ids(engine, tools.prompts[1])
    engine.add_request("lp", ids, params)
    out = tools.run_all(engine)["lp"]
    completion = out.outputs[0]
    assert len(completion.logprobs) == 6
    for token, entry in zip(completion.token_ids, completion.logprobs):
        assert token in entry and entry[token][1] == 1  # greedy: the chosen token has rank 1
        assert len(entry) >= 3
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(ids)
    assert all(ids[i] in out.prompt_logprobs[i] for i in range(1, len(ids)))
    assert abs(completion.cumulative_logprob - sum(e[t][0] for t, e in zip(completion.token_ids, completion.logprobs))) < 1e-4
