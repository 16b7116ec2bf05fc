"""The gaudi plugin on its habana-free stubs: availability, one mark_step per step, graphs, memory, the CPU's tokens."""

from __future__ import annotations

import pytest
import torch

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.plugin_manager import load_plugins
from tokenmill.sampling import SamplingParams
from tokenmill.testing.tiny_model import write_tiny_llama

import tokenmill_gaudi
from tokenmill_gaudi.buckets import exp_then_linear, gaudi_buckets
from tokenmill_gaudi.graph_runner import HpuGraphStep
from tokenmill_gaudi.stubs import core as stub_core
from tokenmill_gaudi.stubs import hpu as stub_hpu

MiB = 1 << 20
PROMPTS = [list(range(5, 45)), [7, 8, 9], list(range(100, 121)), [3] * 9]  # 40 tokens: a chunked prefill


def test_without_the_variable_gaudi_is_unavailable_and_says_why(monkeypatch):
    monkeypatch.delenv("TOKENMILL_GAUDI_STUBS", raising=False)
    platform = tokenmill_gaudi.tokenmill_platform()
    availability = platform.is_available()
    assert not availability.available and "habana_frameworks is not installed" in availability.reason
    assert (platform.device_type, platform.dist_backend, platform.priority) == ("hpu", "hccl", 70)


def test_the_stubs_are_available_by_name_only_and_say_stubs(monkeypatch):
    monkeypatch.setenv("TOKENMILL_GAUDI_STUBS", "1")
    platform = tokenmill_gaudi.tokenmill_platform()
    assert platform.is_available().available and platform.is_available().reason.startswith("stubs:")
    assert (platform.device_type, platform.dist_backend) == ("cpu", "gloo")
    assert platform.priority < 10, "the stubs must never outrank the cpu plugin"


def test_buckets_grow_by_doubling_then_linearly():
    assert exp_then_linear(1, 32, 100) == (1, 2, 4, 8, 16, 32, 64, 96, 128)
    buckets = gaudi_buckets({"max_num_batched_tokens": 600, "max_num_seqs": 4, "max_blocks_per_seq": 8})
    assert buckets.token_counts == (32, 64, 128, 256, 512, 768)
    assert buckets.batch_sizes == (1, 2, 4, 8) and buckets.block_table_widths == (1, 2, 4, 8)


def test_stub_memory_refuses_what_the_simulated_card_lacks(monkeypatch):
    monkeypatch.setenv("TOKENMILL_GAUDI_STUBS", "1")
    monkeypatch.setenv("TOKENMILL_GAUDI_STUBS_MEMORY", str(64 * MiB))
    from tokenmill_gaudi.allocator import GaudiAllocator

    allocator = GaudiAllocator(0, 0.5)
    budget = allocator.available_kv_bytes(None)
    assert 0 < budget <= 32 * MiB
    caches = allocator.allocate(2, (2, 16, 16, 2, 32), torch.float32)
    assert stub_hpu.memory_stats()["InUse"] >= 2 * 2 * 16 * 16 * 2 * 32 * 4
    with pytest.raises(ValueError, match="--kv-cache-memory asks for"):
        allocator.available_kv_bytes(128 * MiB)
    allocator.free(caches)
    assert caches == []


def test_graph_step_replays_new_inputs_through_its_static_buffers(monkeypatch):
    monkeypatch.setenv("TOKENMILL_GAUDI_STUBS", "1")
    from tokenmill_gaudi.attention import GaudiMetadata

    calls = []

    def step(ids, positions, metadata, rows):
        calls.append(ids.data_ptr())
        return (ids * 10 + positions + metadata.token_request).to(torch.float32)

    graphed = HpuGraphStep(step)
    md = lambda r: GaudiMetadata(torch.zeros(4, dtype=torch.int64), torch.full((4,), r), torch.zeros(4, dtype=torch.int64),
                                 torch.zeros(1, 2, dtype=torch.int64))
    first = graphed(torch.arange(4), torch.ones(4, dtype=torch.int64), md(0), None).clone()
    second = graphed(torch.arange(4) + 1, torch.ones(4, dtype=torch.int64), md(2), None)
    assert first.tolist() == [1, 11, 21, 31] and second.tolist() == [13, 23, 33, 43]
    assert graphed.replays == 1 and len(set(calls)) == 1, "the replay must read the captured static buffers"
    graphed(torch.arange(8), torch.ones(8, dtype=torch.int64), md(0).__class__(*(torch.zeros(8, dtype=torch.int64),) * 3,
                                                                               torch.zeros(2, 2, dtype=torch.int64)), None)
    assert len(graphed.graphs) == 2, "a new shape is a new graph"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(write_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


def _run(model: str, device: str) -> tuple[list[list[int]], int, int, EngineCore]:
    """Greedy float32 tokens of PROMPTS, the engine steps taken and the stubs' mark_step calls meanwhile."""
    engine = EngineCore(EngineArgs(model=model, device=device, dtype="float32", block_size=16, max_num_seqs=4,
                                   max_num_batched_tokens=32, max_model_len=128, kv_cache_memory=4 * MiB, seed=0),
                        plugins=load_plugins())
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(str(i), prompt, params)
    final, steps, before = {}, 0, stub_core.mark_step_count()
    while engine.has_unfinished_requests():
        final.update({o.request_id: o for o in engine.step() if o.finished})
        steps += 1
    marks = stub_core.mark_step_count() - before
    return [final[str(i)].outputs[0].token_ids for i in range(len(PROMPTS))], steps, marks, engine


def test_one_mark_step_per_step_and_the_cpu_plugins_greedy_tokens(monkeypatch, tiny_model):
    monkeypatch.setenv("TOKENMILL_GAUDI_STUBS", "1")
    tokens, steps, marks, engine = _run(tiny_model, "gaudi")
    graphed = engine.runner._step
    assert isinstance(graphed, HpuGraphStep) and graphed.replays > 0, "steps must replay recorded HPU graphs"
    assert steps > 12 and marks == steps, "exactly one mark_step per engine step"
    cpu_tokens, _, _, _ = _run(tiny_model, "cpu")
    assert tokens == cpu_tokens
