"""Bad requests get a clear RequestError, and the engine keeps serving everything else."""

from __future__ import annotations

import math

import pytest

from tokenmill.errors import RequestError
from tokenmill.sampling.params import SamplingParams


@pytest.mark.parametrize(
    "make_bad, words",
    [
        (lambda e: ("", SamplingParams()), "empty"),
        (lambda e: ([1] * (e.max_model_len + 5), SamplingParams(max_tokens=4)), "max_tokens"),
        (lambda e: ("hello", SamplingParams.from_dict({"temperature": -1.0})), "temperature"),
        (lambda e: ("hello", SamplingParams.from_dict({"temperature": math.nan})), "temperature"),
        (lambda e: ("hello", SamplingParams.from_dict({"top_p": 0.0})), "top_p"),
        (lambda e: ("hello", SamplingParams.from_dict({"top_p": 1.5})), "top_p"),
        (lambda e: ("hello", SamplingParams.from_dict({"temprature": 0.5})), "temprature"),
    ],
    ids=["empty", "too-long", "negative-temperature", "nan-temperature", "top_p-zero", "top_p-above-one", "unknown-field"],
)
def test_bad_request_is_refused_and_others_finish(make_engine, tools, make_bad, words):
    engine = make_engine()
    good = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    engine.add_request("before", tools.chat_ids(engine, tools.prompts[0]), good)
    engine.step()  # the good request is mid-flight when the bad one arrives
    with pytest.raises(RequestError) as caught:
        prompt, params = make_bad(engine)
        engine.add_request("bad", prompt, params)
    assert words in str(caught.value)
    engine.add_request("after", tools.chat_ids(engine, tools.prompts[1]), good)
    final = tools.run_all(engine)
    assert set(final) == {"before", "after"}
    assert all(len(o.outputs[0].token_ids) == 8 for o in final.values())
    assert engine.kv.num_used_blocks == 0


def test_abort_frees_blocks_at_once(make_engine, tools):
    engine = make_engine()
    engine.add_request("a", tools.chat_ids(engine, tools.prompts[3]), SamplingParams(max_tokens=50))
    engine.step()
    assert engine.kv.num_used_blocks > 0
    engine.abort_request("a")
    assert engine.kv.num_used_blocks == 0
    assert not engine.has_unfinished_requests()


def test_duplicate_request_id_is_refused(make_engine, tools):
    engine = make_engine()
    engine.add_request("same", "hello", SamplingParams(max_tokens=2))
    with pytest.raises(RequestError, match="already in use"):
        engine.add_request("same", "hello again", SamplingParams(max_tokens=2))
    assert set(tools.run_all(engine)) == {"same"}
