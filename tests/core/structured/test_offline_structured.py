"""The offline LLM with SamplingParams(structured_outputs=...) on a tiny random model: every one of n samples
matches its constraint, constrained and free requests share a batch, and a bad spec raises before running."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from tiny_models import write_tiny_model  # noqa: E402

from tokenmill import LLM, SamplingParams  # noqa: E402
from tokenmill.errors import RequestError  # noqa: E402
from tokenmill.structured import StructuredOutputsParams as S  # noqa: E402


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    directory = write_tiny_model("llama2", tmp_path_factory.mktemp("tiny-structured"))
    return LLM(str(directory), dtype="float32", kv_cache_memory=8 * 2**20)


def test_constraints_hold_in_a_mixed_batch(llm):
    regex = SamplingParams(temperature=1.0, n=6, seed=1, max_tokens=20, structured_outputs=S(regex=r"\d{2}:\d{2}"))
    choice = SamplingParams(temperature=1.0, n=6, seed=2, max_tokens=20,
                            structured_outputs=S(choice=["alpha", "beta", "gamma delta"]))
    free = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    alone = llm.generate(["hello"], free, use_tqdm=False)[0].outputs[0].text
    out = llm.generate(["hello", "world", "hello"], [regex, choice, free], use_tqdm=False)
    assert all(re.fullmatch(r"\d{2}:\d{2}", c.text) and c.finish_reason == "stop" for c in out[0].outputs)
    assert all(c.text in ("alpha", "beta", "gamma delta") for c in out[1].outputs)
    assert out[2].outputs[0].text == alone  # an unconstrained row in the batch is untouched


def test_bad_spec_raises_before_anything_runs(llm):
    with pytest.raises(RequestError, match="regex"):
        llm.generate(["hi", "there"], [SamplingParams(), SamplingParams(structured_outputs=S(regex="(("))],
                     use_tqdm=False)
    assert not llm.engine.has_unfinished_requests()
