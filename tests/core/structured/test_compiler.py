"""GrammarCompiler caches compiled grammars and refuses bad specs with messages that name the problem;
StructuredOutputsParams checks its own shape."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from tiny_models import byte_tokenizer  # noqa: E402

from tokenmill.errors import RequestError  # noqa: E402
from tokenmill.sampling.params import SamplingParams  # noqa: E402
from tokenmill.structured import StructuredOutputsParams as S  # noqa: E402
from tokenmill.structured.compiler import GrammarCompiler  # noqa: E402


@pytest.fixture(scope="module")
def compiler():
    return GrammarCompiler(byte_tokenizer(), 300, [257])


def test_same_spec_compiles_once(compiler):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    first = compiler.compile(S(json=schema))
    assert compiler.is_cached(S(json=dict(reversed(list(schema.items())))))  # key order does not matter
    assert compiler.compile(S(json=schema)) is first
    assert compiler.compile(S(json=schema, disable_any_whitespace=True)) is not first


@pytest.mark.parametrize("spec, words", [
    (S(json={"type": "objec"}), "objec"),
    (S(json="{oops"), "not valid JSON"),
    (S(regex="[a-"), "regex"),
    (S(grammar="root ::= ("), "EBNF"),
])
def test_bad_specs_name_the_problem(compiler, spec, words):
    with pytest.raises(RequestError, match=words) as info:
        compiler.compile(spec)
    assert "/project/" not in str(info.value)  # xgrammar's source-path prefix is stripped


@pytest.mark.parametrize("kwargs, words", [
    ({}, "exactly one"), ({"regex": "a", "choice": ["a"]}, "exactly one"), ({"choice": []}, "non-empty list"),
    ({"choice": ["a", ""]}, "non-empty strings"), ({"json": 3}, "JSON schema"),
])
def test_params_check_their_shape(kwargs, words):
    with pytest.raises(RequestError, match=words):
        S(**kwargs)


def test_sampling_params_take_a_dict_and_check_token_fields():
    params = SamplingParams(structured_outputs={"choice": ["a", "b"]}, logit_bias={3: 2})
    assert params.structured_outputs == S(choice=["a", "b"]) and params.logit_bias == {3: 2.0}
    for kwargs in ({"structured_outputs": {"nope": 1}}, {"logit_bias": {1: 101}}, {"bad_words": [" "]},
                   {"allowed_token_ids": []}, {"allowed_token_ids": [True]}):
        with pytest.raises(RequestError):
            SamplingParams(**kwargs)
