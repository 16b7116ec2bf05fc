"""Async scheduling forced on (engine/inflight.py): the same outputs as the synchronous engine, no leaked block.

The CPU plugin leaves async scheduling off, so every test builds one engine with it forced on and
compares it with one forced off, over the embedded SmolLM2 in float32 (batch-invariant on the
CPU, test_batching.py checks that). `flights` counts the steps left in flight, so a test can tell
the async path really ran, and that the fallback cases never leave a step in flight.
"""

from __future__ import annotations

import pytest

from tokenmill.config import EngineArgs
from tokenmill.engine.inflight import resolve_async_scheduling
from tokenmill.errors import PluginError
from tokenmill.sampling.params import SamplingParams

BLOCK_BYTES = 30 * 2 * 16 * 3 * 64 * 4  # one 16-token KV block of SmolLM2-135M in float32


class Run:
    """Steps an engine until idle, recording every finished output and how many steps stayed in flight."""

    def __init__(self, engine) -> None:
        self.engine, self.final, self.flights = engine, {}, 0

    def add(self, requests: list[tuple[str, list[int], SamplingParams]]) -> None:
        for request_id, ids, params in requests:
            self.engine.add_request(request_id, ids, params)

    def step(self) -> None:
        for out in self.engine.step():
            if out.finished:
                assert out.request_id not in self.final, "a request finished twice"
                self.final[out.request_id] = [(c.token_ids, c.finish_reason, c.stop_reason, c.text)
                                              for c in out.outputs]
        self.flights += self.engine._inflight is not None

    def until_idle(self) -> dict:
        while self.engine.has_unfinished_requests():
            self.step()
        assert self.engine.kv.num_used_blocks == 0, "every KV block must be free at the end"
        return self.final


def both(make_engine, requests, **engine_args) -> tuple[Run, Run]:
    """The same requests through a synchronous and an async engine."""
    runs = []
    for forced in (False, True):
        run = Run(make_engine(async_scheduling=forced, **engine_args))
        run.add(requests)
        run.until_idle()
        runs.append(run)
    return runs[0], runs[1]


def new_token_at(tokens: list[int], start: int) -> int:
    """The first index >= start whose token did not occur before it."""
    return next(i for i in range(start, len(tokens)) if tokens[i] not in tokens[:i])


@pytest.fixture(scope="module")
def tokenizing(make_engine):
    """An engine used only to tokenize and render prompts."""
    return make_engine()


@pytest.fixture(scope="module")
def greedy_reference(make_engine, tools, tokenizing):
    """A plain greedy run of one prompt, to pick stop tokens that really occur mid-output."""
    ids = tools.chat_ids(tokenizing, tools.prompts[1])
    run = Run(make_engine(async_scheduling=False))
    run.add([("g", ids, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))])
    return ids, run.until_idle()["g"][0][0]


def test_mixed_requests_match_the_synchronous_engine(make_engine, tools, tokenizing, greedy_reference):
    ids, tokens = greedy_reference
    stop_at = new_token_at(tokens, 2)
    late = new_token_at(tokens, 4)  # min_tokens=late masks it until then; it stops the request at `late`
    raw = [tools.prompts[i] for i in (0, 2, 4)]  # without the chat template: EOS comes early
    requests = [
        ("greedy", ids, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)),
        ("stop_id", ids, SamplingParams(temperature=0.0, max_tokens=12, stop_token_ids=[tokens[stop_at]])),
        ("min_tokens", ids, SamplingParams(temperature=0.0, max_tokens=12, min_tokens=late,
                                           stop_token_ids=[tokens[late]])),
        ("long", tools.chat_ids(tokenizing, " ".join(tools.prompts[:6])),
         SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)),
        ("n2", ids, SamplingParams(temperature=1.0, top_p=0.9, n=2, seed=3, max_tokens=8)),
        *[(f"eos{i}", tokenizing.tokenize(p), SamplingParams(temperature=0.8, seed=i, max_tokens=9))
          for i, p in enumerate(raw)],
    ]
    sync, fast = both(make_engine, requests)
    assert fast.final == sync.final
    assert fast.flights > 0 and sync.flights == 0
    assert sync.final["stop_id"][0][:3] == (tokens[: stop_at + 1], "stop", tokens[stop_at])
    assert sync.final["min_tokens"][0][:2] == (tokens[: late + 1], "stop")
    reasons = [sync.final[f"eos{i}"][0][1:3] for i in range(3)]
    assert ("stop", None) in reasons, f"meant to cover an EOS stop, got {reasons}"


def test_abort_while_in_flight_frees_everything_and_reuses_the_id(make_engine, tools, tokenizing):
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    prompts = {name: tools.chat_ids(tokenizing, tools.prompts[i]) for i, name in enumerate("abc")}
    fast = Run(make_engine(async_scheduling=True))
    fast.add([(name, ids, params) for name, ids in prompts.items()])
    while fast.engine._inflight is None or "b" not in fast.engine._inflight.result.sample_ids:
        fast.step()
    fast.engine.abort_request("b")  # its token is still on the device
    fast.add([("b", prompts["c"], params)])  # the same id at once: the stale row must not reach it
    fast.until_idle()
    sync = Run(make_engine(async_scheduling=False))
    sync.add([("a", prompts["a"], params), ("c", prompts["c"], params)])
    sync.until_idle()
    assert fast.final == {"a": sync.final["a"], "c": sync.final["c"], "b": sync.final["c"]}


def test_preemption_in_a_tiny_pool_matches(make_engine, tools, tokenizing):
    # Six prompts of 35-39 tokens take 18 blocks and grow to 24 over 20 tokens; 20 blocks force preemption.
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    requests = [(f"p{i}", tools.chat_ids(tokenizing, p), params) for i, p in enumerate(tools.prompts[:6])]
    sync, fast = both(make_engine, requests, kv_cache_memory=20 * BLOCK_BYTES, enable_prefix_caching=False)
    assert fast.engine.num_blocks == 20
    assert fast.engine.stats().num_preemptions_total > 0, "the pool was meant to force preemption"
    assert fast.final == sync.final and fast.flights > 0


def test_prefix_caching_with_chunked_prefill_matches(make_engine, tools, tokenizing):
    system = ("You are a meticulous assistant for a public library. Answer briefly and cite the shelf. " * 4).strip()
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    waves = [[(f"w{w}q{i}", tools.chat_ids(tokenizing, f"{system}\nQuestion: {tools.prompts[2 * w + i]}"), params)
              for i in range(2)] for w in range(2)]
    runs = []
    for forced in (False, True):
        run = Run(make_engine(async_scheduling=forced, max_num_batched_tokens=32))
        for wave in waves:
            run.add(wave)
            run.until_idle()
        runs.append(run)
    sync, fast = runs
    assert fast.engine.stats().prefix_hits >= 2 * 64, "the shared system prompt should be served from cache"
    assert fast.final == sync.final and fast.flights > 0


def test_host_dependent_requests_run_synchronous_steps(make_engine, tools, tokenizing):
    ids = tools.chat_ids(tokenizing, tools.prompts[3])
    greedy = dict(temperature=0.0, max_tokens=6, ignore_eos=True)
    fallbacks = {
        "penalty": SamplingParams(repetition_penalty=1.5, presence_penalty=0.5, **greedy),
        "logprobs": SamplingParams(logprobs=2, **greedy),
        "prompt_logprobs": SamplingParams(prompt_logprobs=1, **greedy),
        "bad_words": SamplingParams(bad_words=["photosynthesis"], **greedy),
        "choice": SamplingParams(temperature=0.0, max_tokens=6, structured_outputs={"choice": ["red", "blue"]}),
    }
    fast = Run(make_engine(async_scheduling=True))
    assert any(len(seq) > 1 for seq in _sequences(fast.engine, "photosynthesis")), "meant to be a multi-token word"
    for name, params in fallbacks.items():
        fast.add([(name, ids, params), (f"{name}+plain", ids, SamplingParams(**greedy))])
        before = fast.flights
        fast.step()  # the prefill: it computes the prompt logprobs, so even that request's first step is synchronous
        assert fast.flights == before, f"{name}: its first step was left in flight"
        fast.until_idle()
        if name not in ("prompt_logprobs", "choice"):  # prompt logprobs: decodes need nothing; choice ends first, its partner then runs async
            assert fast.flights == before, f"{name}: a step was left in flight"
    sync = Run(make_engine(async_scheduling=False))
    for name, params in fallbacks.items():
        sync.add([(name, ids, params), (f"{name}+plain", ids, SamplingParams(**greedy))])
        sync.until_idle()
    assert fast.final == sync.final
    plain = Run(make_engine(async_scheduling=True))
    plain.add([("alone", ids, SamplingParams(**greedy))])
    assert plain.until_idle()["alone"] == sync.final["penalty+plain"] and plain.flights > 0


def _sequences(engine, word: str) -> list[list[int]]:
    return [engine.tokenizer(text, add_special_tokens=False).input_ids for text in (word, " " + word)]


class _Platform:
    name, static_shapes = "fake", False

    def __init__(self, **attributes) -> None:
        self.__dict__.update(attributes)


@pytest.mark.parametrize("platform, flag, expected", [
    (_Platform(), None, False),  # no attribute: off
    (_Platform(async_scheduling=True), None, True),  # the platform's choice
    (_Platform(async_scheduling=True), False, False),  # --no-async-scheduling wins
    (_Platform(), True, True),  # --async-scheduling wins
    (_Platform(async_scheduling=True, static_shapes=True), True, False),  # static shapes: always synchronous
])
def test_async_scheduling_resolution(platform, flag, expected):
    assert resolve_async_scheduling(EngineArgs(async_scheduling=flag), platform) is expected


def test_async_scheduling_off_with_tensor_parallelism_and_bad_plugin_values():
    assert resolve_async_scheduling(EngineArgs(async_scheduling=True, tensor_parallel_size=2), _Platform()) is False
    with pytest.raises(PluginError, match="async_scheduling"):
        resolve_async_scheduling(EngineArgs(), _Platform(async_scheduling="yes"))


def test_cli_flag_reaches_engine_args():
    import argparse

    parser = argparse.ArgumentParser()
    EngineArgs.add_cli_args(parser)
    values = [EngineArgs.from_cli_args(parser.parse_args(flags)).async_scheduling
              for flags in ([], ["--async-scheduling"], ["--no-async-scheduling"])]
    assert values == [None, True, False]
