"""The CPU step runner's native decode step: bit-equal to the eager step, and the steps it leaves eager."""

from __future__ import annotations

import pytest
import torch

from tokenmill import LLM, SamplingParams
from tokenmill.testing.tiny_model import write_tiny_llama
import tokenmill_cpu.linear_methods
from tokenmill_cpu.quant_matmul import available_isas, quant_matmul
from tokenmill_cpu.step_runner import NativeDecodeStep, cpu_step_runner

PROMPTS = [[5, 9, 13, 2, 77], [40, 41], list(range(50, 62))]  # decode steps of 3 rows, then fewer
NEW_TOKENS = 6

pytestmark = pytest.mark.skipif(cpu_step_runner() is None, reason="decode_step.cpp cannot build here")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(write_tiny_llama(tmp_path_factory.mktemp("decode_step")))


def engine(model: str, **options) -> tuple[LLM, NativeDecodeStep]:
    llm = eager_engine(model, enforce_eager=False, **options)
    wrapped = llm.engine.runner._step  # the core's ModelRunner keeps the wrapped step here
    assert isinstance(wrapped, NativeDecodeStep)
    return llm, wrapped


def eager_engine(model: str, enforce_eager: bool = True, **options) -> LLM:
    """The same engine with every step eager (the step runner is not asked under --enforce-eager)."""
    return LLM(model=model, enable_prefix_caching=False, num_threads=1, max_num_seqs=3, enforce_eager=enforce_eager,
               **options)


def compare_each_native_step(wrapped: NativeDecodeStep) -> list[int]:
    """Make every native step also run eagerly on the same inputs and check the logits are identical;
    returns the row counts of the native steps."""
    native, rows = wrapped._native, []

    def checked(plan, input_ids, positions, metadata, threads=None):
        logits = native(plan, input_ids, positions, metadata, threads)
        eager = wrapped.step(input_ids, positions, metadata)  # rewrites the same KV slots with the same rows
        assert torch.equal(logits, eager), f"{input_ids.shape[0]} rows: max diff {(logits - eager).abs().max()}"
        rows.append(input_ids.shape[0])
        return logits

    wrapped._native = checked
    return rows


def generate(llm: LLM, max_tokens: list[int]) -> list[list[int]]:
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in max_tokens]
    outputs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


@pytest.mark.parametrize(("dtype", "quantization"), [("float32", "int4"), ("bfloat16", "int4"), ("bfloat16", "int8")])
def test_native_decode_steps_equal_the_eager_step(tiny, dtype, quantization):
    """Q4_1 and Q8_0 blocks, float32 and bfloat16 activations: every native step's logits are the eager
    step's to the last bit, and greedy tokens match an engine with every step eager."""
    llm, wrapped = engine(tiny, dtype=dtype, quantization=quantization)
    assert wrapped.native_steps == 1, "the engine's start-up warm-up step (one decode token) runs natively"
    rows = compare_each_native_step(wrapped)
    lengths = [NEW_TOKENS, NEW_TOKENS - 3, NEW_TOKENS - 2]  # requests end one by one: 3, 2, then 1 row
    tokens = generate(llm, lengths)
    assert {1, 2, 3} <= set(rows), f"native steps of {rows} rows"
    assert wrapped.native_steps == 1 + len(rows)
    assert tokens == generate(eager_engine(tiny, dtype=dtype, quantization=quantization), lengths)


@pytest.mark.parametrize("isa", ["portable", "avx2"])
def test_native_decode_steps_on_every_block_kernel_path(tiny, isa, monkeypatch):
    """The layers' block kernel pinned to a slower path this CPU also runs (AVX2-only and older hosts)."""
    if isa not in available_isas():
        pytest.skip(f"this CPU cannot run the {isa} path")
    monkeypatch.setattr(tokenmill_cpu.linear_methods, "quant_matmul", lambda layout: quant_matmul(layout, isa))
    llm, wrapped = engine(tiny, dtype="bfloat16", quantization="int4")
    assert wrapped.step.__self__.model.lm_head.packed.codes.isa == isa
    rows = compare_each_native_step(wrapped)
    generate(llm, [NEW_TOKENS, NEW_TOKENS - 3, NEW_TOKENS])
    assert {2, 3} <= set(rows)


def staggered(llm: LLM) -> dict[str, list[int]]:
    """Two requests decode, a third arrives mid-way (a mixed step), then all three decode together."""
    core, tokens = llm.engine, {}
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    core.add_request("a", PROMPTS[0], params)
    core.add_request("b", PROMPTS[1], params)
    for step in range(3 * NEW_TOKENS):
        if step == 2:
            core.add_request("c", PROMPTS[2], params)
        for out in core.step():
            tokens[out.request_id] = list(out.outputs[0].token_ids)
    return tokens


def test_requests_joining_mid_decode(tiny):
    """Native steps around a mixed (eager) step keep the same cache and tokens as an all-eager engine."""
    llm, wrapped = engine(tiny, dtype="bfloat16", quantization="int4")
    rows = compare_each_native_step(wrapped)
    tokens = staggered(llm)
    assert 3 in rows and 2 in rows and all(len(t) == NEW_TOKENS for t in tokens.values())
    assert tokens == staggered(eager_engine(tiny, dtype="bfloat16", quantization="int4"))


def test_dense_layers_run_every_step_eagerly(tiny):
    llm, wrapped = engine(tiny, dtype="float32", quantization="none")
    assert all(len(t) == NEW_TOKENS for t in generate(llm, [NEW_TOKENS] * 3))
    assert wrapped.native_steps == 0 and wrapped._refused


def test_steps_wider_than_the_crossover_run_eagerly(tiny):
    llm, wrapped = engine(tiny, dtype="bfloat16", quantization="int4")
    generate(llm, [2, 2, 2])  # builds the plan
    wrapped._plan.max_rows = 2  # as if the layers ran their dense weight above 2 rows
    before = wrapped.native_steps
    generate(llm, [NEW_TOKENS, NEW_TOKENS - 3, NEW_TOKENS])
    assert wrapped.native_steps - before == 3  # only the 2-row steps after the short request ended


def test_beside_an_api_server_native_steps_leave_a_core_and_give_the_same_tokens(tiny):
    """The engine-core process (detokenize=False) asks for a reserved core; the tokens do not change."""
    from tokenmill.config import EngineArgs
    from tokenmill.engine.core import EngineCore

    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    alone = eager_engine(tiny, quantization="int4").generate([{"prompt_token_ids": PROMPTS[0]}], params, use_tqdm=False)
    expected = list(alone[0].outputs[0].token_ids)
    for detokenize, reserved in ((True, False), (False, True)):
        core = EngineCore(EngineArgs(model=tiny, device="cpu", num_threads=2, enable_prefix_caching=False,
                                     quantization="int4"),
                          detokenize=detokenize)
        wrapped, threads = core.runner._step, []
        native = wrapped._native
        wrapped._native = lambda *args, native=native, threads=threads: threads.append(args[-1]) or native(*args)
        core.add_request("r", PROMPTS[0], params)
        tokens = []
        while core.has_unfinished_requests():
            tokens += [t for d in core.step_deltas().samples for t in d.new_token_ids]
        assert wrapped.reserve_core is reserved and threads and set(threads) == {1 if reserved else 2}
        assert tokens == expected
