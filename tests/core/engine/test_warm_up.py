"""The engine's start-up warm-up step: one pure-decode token through the wrapped step before any request."""

from __future__ import annotations

from dataclasses import replace

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.hookspecs import hookimpl
from tokenmill.plugin_manager import load_plugins
from tokenmill.sampling import SamplingParams

MiB = 1 << 20
GREEDY = SamplingParams(temperature=0.0, max_tokens=10)


class RecordingRunner:
    """A step runner that notes each step's shape, as a lazily capturing one (CUDA graphs) meets them."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []  # (tokens, pure decode) per step (the CPU backend's metadata)

    def wrap(self, step):
        def wrapped(input_ids, positions, metadata, logits_indices=None):
            self.calls.append((input_ids.shape[0], metadata.pure_decode))
            return step(input_ids, positions, metadata, logits_indices)
        return wrapped


class RecordingCpuPlugin:
    """The cpu plugin's pieces under the name "reccpu", with a RecordingRunner as its step runner."""

    def __init__(self, cpu_module, runner: RecordingRunner) -> None:
        self.cpu, self.cpu_platform, self.runner = cpu_module, cpu_module.tokenmill_platform(), runner

    @hookimpl
    def tokenmill_platform(self):
        return replace(self.cpu_platform, name="reccpu", priority=0)

    @hookimpl
    def tokenmill_attention_backend(self, platform, spec):
        return self.cpu.tokenmill_attention_backend(platform=self.cpu_platform, spec=spec)

    @hookimpl
    def tokenmill_kv_allocator(self, platform, device_index):
        return self.cpu.tokenmill_kv_allocator(platform=self.cpu_platform, device_index=device_index)

    @hookimpl
    def tokenmill_communicator(self, platform, group):
        return self.cpu.tokenmill_communicator(platform=self.cpu_platform, group=group)

    @hookimpl
    def tokenmill_step_runner(self, platform, options):
        return self.runner



def test_the_engine_runs_one_decode_token_through_the_step_runner_before_any_request(make_engine, tools):
    import tokenmill_cpu

    runner = RecordingRunner()
    manager = load_plugins()
    manager.register(RecordingCpuPlugin(tokenmill_cpu, runner), "reccpu")
    engine = EngineCore(EngineArgs(device="reccpu", dtype="float32", kv_cache_memory=64 * MiB), plugins=manager)
    assert runner.calls == [(1, True)], "start-up runs exactly one pure-decode step of one token"
    prompts = tools.prompts[:3]
    engine.add_request("first", prompts[0], SamplingParams(max_tokens=4, ignore_eos=True))
    engine.step()
    assert 0 in engine.kv.block_table("first"), "the first request reuses block 0, where the warm-up wrote"
    engine.abort_request("first")
    # the warm-up's key and value in slot 0 change nothing a request reads
    assert tools.greedy(engine, prompts, GREEDY) == tools.greedy(make_engine(), prompts, GREEDY)
