"""Tensor parallelism 2 on static-shape platforms: the gaudi stubs (HCCL as gloo) and the static_toy plugin.

Every step is padded to the platform's buckets on rank 0 and broadcast padded: each rank's pool
must hold the null block at the same index, and each rank's step runner gets the same buckets.
The engine under test is the real one (this process is rank 0, a spawned process rank 1); the
environment that selects the stubs is set before the engine starts, so the spawned rank has it.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import pytest
import torch

from tokenmill.errors import TokenmillError
from tokenmill.parallel import rank_setup
from tokenmill.sampling.params import SamplingParams
from test_tp_mp import PROMPTS, greedy

STATIC = dict(max_num_seqs=8, max_num_batched_tokens=128)  # 8 prompts prefill over two steps, one of them mixed
_WORKER_GRAPH = re.compile(r"tp-rank1 DEBUG captured an HPU graph for step shape \(\(\((\d+),\), torch\.int64\)"
                           r".*?\(\((\d+), (\d+)\), torch\.int64\)")


@pytest.fixture
def gaudi_stubs(monkeypatch):
    """Select the gaudi plugin's stubs here and in every rank spawned during the test.

    The stubs' simulated card is one per process: what this test's engines took of rank 0's is
    handed back after it, as their pools are gone (later tests size pools on the same card).
    """
    monkeypatch.setenv("TOKENMILL_GAUDI_STUBS", "1")
    from tokenmill_gaudi.stubs import hpu

    before = hpu.memory_stats()["InUse"]
    yield
    hpu.untrack(hpu.memory_stats()["InUse"] - before)
    hpu.reset_peak_memory_stats()


def padded_prompt_logits(engine, token_ids: list[int]) -> torch.Tensor:
    """float32 [T, V]: one prompt's every row, through the engine's own padded step (and so every rank)."""
    engine.add_request("logits", token_ids, SamplingParams(max_tokens=1))
    out = engine.scheduler.schedule()
    assert out.num_batched_tokens == len(token_ids), "the whole prompt in one step"
    with engine.execution.guard():
        result = engine.runner.execute(out, {"logits"})
    engine.abort_request("logits")
    return result.prompt_logits["logits"][1].clone()


def driver_graph_shapes(engine) -> set[tuple[int, int, int]]:
    """(T, B, W) of every HPU graph rank 0's step runner captured (its key: ids, ..., block tables, rows)."""
    return {(key[0][0][0], *key[5][0]) for key in engine.runner._step.graphs}


def worker_graph_shapes(log_text: str) -> set[tuple[int, int, int]]:
    """(T, B, W) of every HPU graph rank 1's step runner captured, from its own debug log."""
    return {tuple(map(int, m.groups())) for m in _WORKER_GRAPH.finditer(log_text)}


def is_bucketed(shape: tuple[int, int, int], buckets) -> bool:
    tokens, reqs, width = shape
    decode_pad = tokens == reqs  # a pure decode pads T to its batch bucket
    return (tokens in buckets.token_counts or decode_pad) and reqs in buckets.batch_sizes \
        and width in buckets.block_table_widths


@pytest.mark.parametrize("variant", ["kv2", "kv3"])
def test_gaudi_stubs_two_ranks_match_one_with_padded_steps(variant, gaudi_stubs, tp_model_dirs, make_tp_engine,
                                                           capfd, caplog):
    """kv3: three KV heads neither divide by nor into 2, so both ranks hold replicated ones."""
    caplog.set_level(logging.DEBUG)  # the workers log at the engine's level: rank 1 reports its graphs
    model, prompt = tp_model_dirs[variant], list(range(3, 40))  # 37 tokens pad to the 64 bucket
    one = make_tp_engine(model, device="gaudi", **STATIC)
    want_logits, want_tokens = padded_prompt_logits(one, prompt), greedy(one, PROMPTS)
    one.shutdown()
    two = make_tp_engine(model, device="gaudi", tensor_parallel_size=2, **STATIC)
    assert two.platform.static_shapes and two.executor is not None
    pool_blocks = two.runner.kv_caches[0].shape[1]  # (2, N, S, Hkv, D): the null block is the last
    assert two.runner.padding.null_block == two.num_blocks == pool_blocks - 1
    got_logits = padded_prompt_logits(two, prompt)
    assert got_logits.shape == want_logits.shape == (37, 259)
    torch.testing.assert_close(got_logits, want_logits, atol=2e-4, rtol=1e-4)
    assert greedy(two, PROMPTS) == want_tokens
    driver = driver_graph_shapes(two)
    two.shutdown()  # the worker has logged all it will
    worker = worker_graph_shapes(capfd.readouterr().err)
    buckets = two.runner.padding.buckets
    assert worker == driver, "rank 1 must run exactly rank 0's padded step shapes"
    assert all(is_bucketed(s, buckets) for s in worker) and (64, 2, 4) in worker, worker


def test_static_toy_two_ranks_match_one_after_a_warm_up_on_every_rank(monkeypatch, tp_model_dirs, make_tp_engine):
    """An out-of-tree static-shape plugin (functional KV cache, buckets x4 apart) whose step runner runs
    every token bucket as it wraps the step, as the TPU plugin compiles them: rank 0's warm-up is not
    broadcast, so it finishes only if rank 1's runner got the same buckets and warms up alike."""
    toy = pytest.importorskip("tokenmill_static_toy", reason="install it: pip install -e tests/static_toy_plugin")
    monkeypatch.setenv("TOKENMILL_STATIC_TOY_WARMUP", "1")
    monkeypatch.setenv("TOKENMILL_COLLECTIVE_TIMEOUT_S", "30")  # a warm-up rank 1 skipped fails in 30 s
    model = tp_model_dirs["kv1"]  # one KV head: both ranks hold it
    want = greedy(make_tp_engine(model, device="static_toy", **STATIC), PROMPTS)
    toy.RECORDER.reset()
    two = make_tp_engine(model, device="static_toy", tensor_parallel_size=2, **STATIC)
    buckets = two.runner.padding.buckets
    assert toy.RECORDER.warmup_steps == len(buckets.token_counts) > 1
    assert greedy(two, PROMPTS) == want
    assert toy.RECORDER.batch_shapes and all(is_bucketed(s, buckets) for s in toy.RECORDER.batch_shapes)


def test_a_dist_backend_the_engine_cannot_use_is_refused_with_the_fix(gaudi_stubs):
    import tokenmill_gaudi

    stubs = tokenmill_gaudi.tokenmill_platform()
    rank_setup.require_dist_backend(stubs)  # the stubs' gloo is there
    with pytest.raises(TokenmillError, match=r"backend 'hccl', which is not registered.*--tensor-parallel-size 1"):
        rank_setup.require_dist_backend(dataclasses.replace(stubs, dist_backend="hccl"))  # no Habana stack here
    with pytest.raises(TokenmillError, match=r"'xla' backend works only as the default process group"):
        rank_setup.require_dist_backend(dataclasses.replace(stubs, name="tpu", dist_backend="xla"))
