"""SamplingParams validation, normalisation and from_dict."""

import math

import pytest

from tokenmill.errors import RequestError
from tokenmill.sampling import SamplingParams


def test_defaults_match_vllm():
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p, p.max_tokens) == (1, 1.0, 1.0, 0, 0.0, 16)
    assert (p.repetition_penalty, p.presence_penalty, p.frequency_penalty) == (1.0, 0.0, 0.0)
    assert p.stop == [] and p.stop_token_ids == [] and p.logprobs is None and p.seed is None
    assert p.skip_special_tokens and not p.ignore_eos and not p.include_stop_str_in_output
    assert not p.is_greedy and not p.has_penalties


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -0.5),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_p", -0.1),
        ("top_k", -2),
        ("min_p", 1.1),
        ("min_p", -0.1),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3.0),
        ("repetition_penalty", 0.0),
        ("repetition_penalty", math.nan),
        ("n", 0),
        ("max_tokens", 0),
        ("min_tokens", -1),
        ("logprobs", -1),
        ("prompt_logprobs", -1),
        ("n", 1.5),
        ("top_k", "5"),
        ("ignore_eos", "yes"),
        ("temperature", "hot"),
        ("temperature", None),
    ],
)
def test_bad_value_names_the_field(field, value):
    with pytest.raises(RequestError) as info:
        SamplingParams(**{field: value})
    assert field in str(info.value)
    assert repr(value) in str(info.value)


def test_range_message_states_the_allowed_range():
    with pytest.raises(RequestError, match=r"top_p must be in \(0, 1\]"):
        SamplingParams(top_p=2.0)
    with pytest.raises(RequestError, match=r"temperature must be a finite number >= 0"):
        SamplingParams(temperature=math.nan)


def test_min_tokens_above_max_tokens():
    with pytest.raises(RequestError, match="min_tokens"):
        SamplingParams(min_tokens=10, max_tokens=5)
    assert SamplingParams(min_tokens=10, max_tokens=None).min_tokens == 10


def test_stop_normalised_to_list_and_empty_refused():
    assert SamplingParams(stop="###").stop == ["###"]
    assert SamplingParams(stop=("a", "b")).stop == ["a", "b"]
    with pytest.raises(RequestError, match="stop"):
        SamplingParams(stop=["ok", ""])
    with pytest.raises(RequestError, match="stop"):
        SamplingParams(stop=[1, 2])
    with pytest.raises(RequestError, match="stop_token_ids"):
        SamplingParams(stop_token_ids=[-1])


def test_tiny_temperature_is_greedy_and_turns_truncation_off():
    p = SamplingParams(temperature=1e-6, top_k=5, top_p=0.5, min_p=0.2)
    assert p.is_greedy and (p.top_k, p.top_p, p.min_p) == (0, 1.0, 0.0)
    assert not SamplingParams(temperature=1e-4).is_greedy


def test_integers_accepted_for_floats():
    p = SamplingParams(temperature=1, top_p=1)
    assert isinstance(p.temperature, float) and isinstance(p.top_p, float)


def test_from_dict_round_trip_and_unknown_field():
    p = SamplingParams.from_dict({"temperature": 0.5, "top_k": 40, "stop": "x", "seed": 3})
    assert (p.temperature, p.top_k, p.stop, p.seed) == (0.5, 40, ["x"], 3)
    with pytest.raises(RequestError) as info:
        SamplingParams.from_dict({"temperature": 0.5, "best_off": 2})
    message = str(info.value)
    assert "best_off" in message and "temperature" in message and "top_p" in message


def test_from_dict_validates_values():
    with pytest.raises(RequestError, match="temperature"):
        SamplingParams.from_dict({"temperature": -1})
