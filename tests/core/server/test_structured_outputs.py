"""Structured outputs through the official `openai` client on the default model: json_schema, json_object,
choice, regex and EBNF constraints hold, aliases work, and a bad schema, regex or grammar is a 400."""

from __future__ import annotations

import json
import re

import jsonschema
import openai
import pytest

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
    },
    "required": ["name", "age", "role"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Describe a person as JSON with a name, an age and a role."}]


def _chat(live_server, **kwargs):
    kwargs.setdefault("max_tokens", 64)
    return live_server.client().chat.completions.create(model=live_server.model, messages=ASK, **kwargs)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_outputs_validate(live_server, temperature):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    out = _chat(live_server, response_format=fmt, temperature=temperature, n=4 if temperature else 1, seed=7)
    for choice in out.choices:
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_json_object_is_an_object(live_server):
    out = _chat(live_server, response_format={"type": "json_object"}, temperature=0, max_tokens=96)
    value = json.loads(out.choices[0].message.content)
    assert isinstance(value, dict)


def test_choice_holds_over_20_samples(live_server):
    options = ["red", "green", "light blue"]
    out = _chat(live_server, temperature=1.0, n=20, seed=3, extra_body={"structured_outputs": {"choice": options}})
    texts = [c.message.content for c in out.choices]
    assert len(texts) == 20 and set(texts) <= set(options), texts


def test_regex_holds_over_20_samples_and_guided_alias(live_server):
    pattern = r"[A-Z]{2}-\d{3}"
    out = live_server.client().completions.create(model=live_server.model, prompt="Ticket number:", max_tokens=12,
                                                  temperature=1.0, n=20, seed=5, extra_body={"guided_regex": pattern})
    texts = [c.text for c in out.choices]
    assert len(texts) == 20 and all(re.fullmatch(pattern, t) for t in texts), texts
    assert len(set(texts)) > 1  # sampled, not one forced string


def test_ebnf_grammar(live_server):
    grammar = 'root ::= "The answer is " digit digit? "."\ndigit ::= [0-9]'
    out = _chat(live_server, temperature=1.0, n=5, seed=1, extra_body={"structured_outputs": {"grammar": grammar}})
    assert all(re.fullmatch(r"The answer is \d\d?\.", c.message.content) for c in out.choices)


def test_unconstrained_output_differs(live_server):
    # the constraint really changes what is sampled: greedy without it is not JSON of this schema
    free = _chat(live_server, temperature=0).choices[0].message.content
    with pytest.raises((json.JSONDecodeError, jsonschema.ValidationError)):
        jsonschema.validate(json.loads(free), PERSON)


@pytest.mark.parametrize("extra, words", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "strin"}}}}}}, ["strin"]),
    ({"structured_outputs": {"regex": "a(b"}}, ["regex", "parenthesis"]),
    ({"guided_grammar": 'root ::= "a" |'}, ["EBNF"]),
    ({"structured_outputs": {"json": "{not json"}}, ["not valid JSON"]),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, ["exactly one"]),
    ({"guided_choice": ["a"], "guided_regex": "b"}, ["only one"]),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, ["json_schema.schema"]),
])
def test_bad_constraints_are_400s_naming_the_problem(live_server, extra, words):
    with pytest.raises(openai.BadRequestError) as info:
        _chat(live_server, max_tokens=4, extra_body=extra)
    message = str(info.value)
    assert all(w in message for w in words), message
    assert live_server.client().models.list().data  # the server keeps serving
