"""Runs a short real generation on a platform and records what its pieces are handed along the way.

`ProbeManager` stands in for the plugin manager the engine is given: it passes every request
through, but wraps the attention backend so each `build_metadata` call's AttentionBatch is copied
as received, and wraps the step so each step's inputs are kept and, when the platform has a step
runner, the wrapped step's logits are compared with the unwrapped step's on the same inputs.
`run_workload` drives the engine through prefill-only, mixed and decode-only steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.interfaces import AttentionBatch
from tokenmill.sampling.params import SamplingParams

MiB = 1 << 20
ENGINE_OPTIONS = dict(block_size=16, max_num_batched_tokens=32, max_num_seqs=4, max_model_len=128,
                      kv_cache_memory=4 * MiB, seed=0)
PREFIX = list(range(40, 56))  # one full block shared by two prompts: a prefix-cache hit
FIRST_WAVE = {"a": list(range(60, 67)), "b": PREFIX + [7, 8, 9, 10]}  # 7 + 20 tokens: one prefill step
SECOND_WAVE = {"c": PREFIX + list(range(100, 129)), "d": [200, 201, 202]}  # 45 tokens: chunked under 32
MAX_TOKENS = 6


@dataclass(slots=True)
class StepCall:
    """One call of the model step: its inputs, and with a step runner both outputs (host, float32)."""

    input_ids: torch.Tensor  # int64 [T]
    positions: torch.Tensor  # int64 [T]
    wrapped: torch.Tensor | None = None  # [R, V] through the platform's step runner
    unwrapped: torch.Tensor | None = None  # [R, V] of the plain step


@dataclass(slots=True)
class Recording:
    """What one engine run handed the platform's pieces."""

    batches: list[AttentionBatch] = field(default_factory=list)
    steps: list[StepCall] = field(default_factory=list)
    has_step_runner: bool = False
    buckets: Any = None  # the ShapeBuckets in force (static platforms)


def host_copy(batch: AttentionBatch) -> AttentionBatch:
    """The batch with its tensors copied to the host, so later steps cannot change the record."""
    values = {f.name: getattr(batch, f.name) for f in fields(AttentionBatch)}
    return AttentionBatch(**{k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else
                             (list(v) if isinstance(v, list) else v) for k, v in values.items()})


class RecordingBackend:
    """The platform's attention backend, with `build_metadata` recording each batch it receives."""

    def __init__(self, backend: Any, recording: Recording) -> None:
        self._backend, self._recording = backend, recording

    def build_metadata(self, batch: AttentionBatch) -> Any:
        self._recording.batches.append(host_copy(batch))
        return self._backend.build_metadata(batch)

    def __getattr__(self, name: str) -> Any:  # name, forward, kv_cache_shape, functional_cache, ...
        return getattr(self._backend, name)


class ComparingStepRunner:
    """Wraps the step with the platform's step runner (if any), keeping inputs and both outputs."""

    def __init__(self, inner: Any, recording: Recording) -> None:
        self._inner, self._recording = inner, recording
        recording.has_step_runner = inner is not None

    def wrap(self, step):
        wrapped = step if self._inner is None else self._inner.wrap(step)

        def probe(input_ids: torch.Tensor, positions: torch.Tensor, metadata: Any, *extra: Any) -> torch.Tensor:
            call = StepCall(input_ids.detach().cpu().clone(), positions.detach().cpu().clone())
            out = wrapped(input_ids, positions, metadata, *extra)
            if self._inner is not None:  # the same inputs again, unwrapped: rewrites the same KV slots
                call.wrapped = out.detach().float().cpu().clone()
                call.unwrapped = step(input_ids, positions, metadata, *extra).detach().float().cpu()
            self._recording.steps.append(call)
            return out

        return probe


class ProbeManager:
    """A PluginManager as the engine uses it, with the attention backend and the step recorded."""

    def __init__(self, manager: Any, recording: Recording) -> None:
        self._manager, self.recording = manager, recording

    def attention_backend(self, platform: Any, spec: Any) -> RecordingBackend:
        return RecordingBackend(self._manager.attention_backend(platform, spec), self.recording)

    def step_runner(self, platform: Any, options: dict[str, Any]) -> ComparingStepRunner:
        self.recording.buckets = options.get("buckets")
        return ComparingStepRunner(self._manager.step_runner(platform, options), self.recording)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)


def make_engine(model_dir: str, device: str, dtype: str, plugins: Any) -> EngineCore:
    """An engine on the tiny model, small enough that steps chunk and mix."""
    return EngineCore(EngineArgs(model=model_dir, device=device, dtype=dtype, **ENGINE_OPTIONS), plugins=plugins)


def run_workload(engine: EngineCore) -> dict[str, list[int]]:
    """Greedy generation: two prompts, a step, then two more (one chunked, one a prefix hit)."""
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    for request_id, ids in FIRST_WAVE.items():
        engine.add_request(request_id, ids, params)
    finished = _collect(engine.step(), {})
    for request_id, ids in SECOND_WAVE.items():
        engine.add_request(request_id, ids, params)
    while engine.has_unfinished_requests():
        _collect(engine.step(), finished)
    return finished


def _collect(outputs: list, finished: dict[str, list[int]]) -> dict[str, list[int]]:
    for out in outputs:
        if out.finished:
            finished[out.request_id] = list(out.outputs[0].token_ids)
    return finished
