"""Contract-2 seams in a real engine: a functional KV cache, a KV-cache dtype apart from the model's."""

from __future__ import annotations

import pytest
import torch

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.errors import TokenmillError
from tokenmill.hookspecs import hookimpl
from tokenmill.plugin_manager import load_plugins
from tokenmill.sampling import SamplingParams

MiB = 1 << 20
GREEDY = SamplingParams(temperature=0.0, max_tokens=12)


class FunctionalBackend:
    """The CPU backend made functional: it writes a copy of the cache and returns that copy."""

    functional_cache = True

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = "functional_" + inner.name

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def forward(self, query, key, value, kv_cache, metadata, scale):
        updated = kv_cache.clone()  # the caller's tensor is never written
        return self.inner.forward(query, key, value, updated, metadata, scale), updated


class FunctionalCpuPlugin:
    """An in-process plugin: the cpu plugin's pieces under the name "funcpu", attention made functional."""

    def __init__(self, cpu_module, cpu_platform) -> None:
        self.cpu, self.cpu_platform = cpu_module, cpu_platform

    @hookimpl
    def tokenmill_platform(self):
        from dataclasses import replace
        return replace(self.cpu_platform, name="funcpu", priority=0)

    @hookimpl
    def tokenmill_attention_backend(self, platform, spec):
        return FunctionalBackend(self.cpu.tokenmill_attention_backend(platform=self.cpu_platform, spec=spec))

    @hookimpl
    def tokenmill_kv_allocator(self, platform, device_index):
        return self.cpu.tokenmill_kv_allocator(platform=self.cpu_platform, device_index=device_index)

    @hookimpl
    def tokenmill_communicator(self, platform, group):
        return self.cpu.tokenmill_communicator(platform=self.cpu_platform, group=group)



def test_a_functional_backends_returned_cache_is_the_one_used_next(make_engine, tools):
    import tokenmill_cpu

    manager = load_plugins()
    manager.register(FunctionalCpuPlugin(tokenmill_cpu, tokenmill_cpu.tokenmill_platform()), "funcpu")
    engine = EngineCore(EngineArgs(device="funcpu", dtype="float32", kv_cache_memory=16 * MiB,
                                   max_num_batched_tokens=32), plugins=manager)
    allocated = list(engine.runner.kv_caches)  # the start-up warm-up step's output caches
    before = [t.clone() for t in allocated]
    prompts = tools.prompts[:3]
    reference = make_engine(max_num_batched_tokens=32)
    assert tools.greedy(engine, prompts, GREEDY) == tools.greedy(reference, prompts, GREEDY)
    assert all(a is not b for a, b in zip(allocated, engine.runner.kv_caches)), "the cache was never threaded"
    assert all(torch.equal(a, b) for a, b in zip(allocated, before)), "the backend wrote its input cache"


def test_bfloat16_kv_cache_under_a_float32_model(make_engine, tools, cpu_plugins):
    with pytest.raises(TokenmillError, match="--kv-cache-dtype"):
        make_engine(kv_cache_dtype="bfloat16")  # the shared model was loaded for a float32 cache
    engine = EngineCore(EngineArgs(device="cpu", dtype="float32", kv_cache_dtype="bfloat16",
                                   kv_cache_memory=64 * MiB), plugins=cpu_plugins)
    assert engine.runner.kv_caches[0].dtype == torch.bfloat16 and engine.bundle.dtype == torch.float32
    reference = make_engine()
    halved = engine.num_blocks / reference.num_blocks
    assert 1.9 < halved < 2.1, "a bf16 cache holds twice the blocks in the same memory"
    # A bf16 cache rounds keys and values: most greedy tokens agree, not all need to.
    prompts = tools.prompts[:4]
    mine, theirs = tools.greedy(engine, prompts, GREEDY), tools.greedy(reference, prompts, GREEDY)
    agree = sum(a == b for x, y in zip(mine, theirs) for a, b in zip(x, y)) / sum(map(len, theirs))
    assert agree >= 0.75, agree


def test_kv_cache_dtype_is_refused_for_a_contract_1_plugin(monkeypatch):
    monkeypatch.delenv("TOKENMILL_PLUGINS", raising=False)
    manager = load_plugins()
    if "toy" not in manager.records:
        pytest.skip("the contract-1 toy plugin is not installed (pip install -e tests/toy_plugin)")
    with pytest.raises(TokenmillError, match="built for plugin contract 1.0"):
        EngineCore(EngineArgs(device="toy", dtype="float32", kv_cache_dtype="bfloat16"), plugins=manager)
