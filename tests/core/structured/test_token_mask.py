"""The apply_token_bitmask reference masks exactly what xgrammar's own kernel masks; the Sampler applies
grammars through the op registry (a plugin's override is called) and leaves unconstrained rows alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import xgrammar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from tiny_models import byte_tokenizer  # noqa: E402

from tokenmill.ops import OpRegistry  # noqa: E402
from tokenmill.sampling.params import SamplingParams  # noqa: E402
from tokenmill.sampling.sampler import Sampler, SamplingRow  # noqa: E402
from tokenmill.structured import StructuredOutputsParams  # noqa: E402
from tokenmill.structured.compiler import GrammarCompiler  # noqa: E402
from tokenmill.structured.matcher import GrammarState  # noqa: E402
from tokenmill.structured.token_mask import apply_token_bitmask  # noqa: E402

VOCAB = 300  # wider than the 260-token byte tokenizer, as model vocabularies often are
EOS = 257


@pytest.mark.parametrize("vocab", [VOCAB, 64, 1000])
def test_reference_masks_as_xgrammar_does(vocab):
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn(5, vocab, generator=gen)
    words = -(-vocab // 32)
    bitmask = torch.randint(-2**31, 2**31 - 1, (5, words), dtype=torch.int32, generator=gen)
    rows = [4, 0, 2]
    theirs = logits.clone()
    full = bitmask.clone()
    full[[1, 3]] = -1  # all allowed on the rows not masked
    xgrammar.apply_token_bitmask_inplace(theirs, full, backend="torch_native")
    for where in (logits.clone(), logits.t().contiguous().t()):  # the CPU kernel, and plain torch (strided)
        apply_token_bitmask(where, bitmask, torch.tensor(rows))
        assert torch.equal(where.isinf(), theirs.isinf())
        assert torch.equal(where[~where.isinf()], logits[~where.isinf()])
        assert where[[1, 3]].isinf().sum() == 0


def _rows(compiler, specs):
    rows = []
    for spec in specs:
        grammar = None if spec is None else GrammarState(compiler.compile(spec))
        rows.append(SamplingRow(SamplingParams(temperature=0.0), [1, 2], [], grammar=grammar))
    return rows


def test_sampler_masks_constrained_rows_through_the_op_registry():
    compiler = GrammarCompiler(byte_tokenizer(), VOCAB, [EOS])
    calls = []

    def recording(logits, bitmask, rows):
        calls.append(rows.tolist())
        apply_token_bitmask(logits, bitmask, rows)

    sampler = Sampler([EOS], OpRegistry({"apply_token_bitmask": recording}))
    rows = _rows(compiler, [None, StructuredOutputsParams(choice=["xyz"]), None])
    logits = torch.zeros(3, VOCAB)
    logits[:, ord("a") - 33 + 1] = 5.0  # some other token is the favourite everywhere
    free = sampler(logits.clone(), [rows[0], rows[2]]).token_ids
    out = sampler(logits.clone(), rows).token_ids
    assert calls == [[1]]  # one call, for the constrained row only; the unconstrained batch made none
    tokenizer = byte_tokenizer()
    assert tokenizer.decode([out[1]]) == "x"
    assert [out[0], out[2]] == free


def test_grammar_state_follows_the_tokens_and_stops():
    tokenizer = byte_tokenizer()
    compiler = GrammarCompiler(tokenizer, VOCAB, [EOS])
    state = GrammarState(compiler.compile(StructuredOutputsParams(regex="ab")))
    for token in tokenizer("ab", add_special_tokens=False).input_ids:
        assert state.accept(token)
    assert not state.terminated and state.accept(EOS) and state.terminated
    other = GrammarState(compiler.compile(StructuredOutputsParams(regex="ab")))
    assert not other.accept(tokenizer("b", add_special_tokens=False).input_ids[0]) and other.broken
