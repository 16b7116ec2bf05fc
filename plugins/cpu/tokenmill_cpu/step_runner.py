"""The CPU step runner: narrow pure-decode steps go to the native decode step, every other step runs eagerly.

Why: at batch 1 the block matmuls take ~12 ms a token on one thread and the Python and torch
dispatch around a step's ~270 calls ~7 ms more; decode_step.cpp makes those calls from C++.
The model is found through the wrapped step's owner (`step.__self__`, the core's ModelRunner
with its `model` and `kv_caches`); where there is none, or the model is not one the native step
reproduces (decode_step.ModelPlan says why, logged once), the step runs as it is.
A step runs natively when it is pure decode (one new token per request, rows in order), no wider
than the packed layers' crossover to their dense weight, and asks for every row's logits.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from tokenmill_cpu.attention_metadata import CpuAttentionMetadata
from tokenmill_cpu.decode_step import DecodeStep, ModelPlan, Unsupported, decode_step

log = logging.getLogger(__name__)


class NativeDecodeStep:
    """The wrapped step: the native decode step where it applies, else `step` itself."""

    def __init__(self, step: Callable[..., torch.Tensor], native: DecodeStep, reserve_core: bool = False) -> None:
        self.step, self._native = step, native
        self.reserve_core = reserve_core  # native steps leave one core to the API server process
        self._owner = getattr(step, "__self__", None)
        self._plan: ModelPlan | None = None
        self._refused = self._owner is None or not hasattr(self._owner, "model")
        self.native_steps = 0  # how many steps ran natively (tests and benchmarks read it)

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: Any, *extra: Any) -> torch.Tensor:
        plan = None if self._refused or any(e is not None for e in extra) else self._current_plan()
        if plan is not None and _fits(plan, input_ids, positions, metadata):
            threads = max(1, torch.get_num_threads() - self.reserve_core)
            logits = self._native(plan, input_ids, positions, metadata, threads)
            if logits is not None:
                self.native_steps += 1
                return logits
        return self.step(input_ids, positions, metadata, *extra)

    def _current_plan(self) -> ModelPlan | None:
        """The plan over the owner's current caches; built on first use, None (for good) if refused."""
        caches = self._owner.kv_caches
        if self._plan is None or not self._plan.current(caches):
            try:
                self._plan = ModelPlan(self._owner.model, caches)
            except Unsupported as why:
                log.info("decode steps run eagerly: %s", why)
                self._refused, self._plan = True, None
        return self._plan


def _fits(plan: ModelPlan, input_ids: torch.Tensor, positions: torch.Tensor, metadata: Any) -> bool:
    """Whether this step is one the native step runs: pure decode, narrow, int64 inputs in place."""
    if not isinstance(metadata, CpuAttentionMetadata) or not metadata.pure_decode or metadata.decode is None:
        return False
    rows = input_ids.shape[0]
    decode = metadata.decode
    tensors = (input_ids, positions, decode.block_table, decode.seq_lens, metadata.slot_mapping)
    return (0 < rows <= plan.max_rows and decode.seq_lens.shape[0] == rows and positions.shape[0] == rows
            and all(t.dtype == torch.int64 and t.is_contiguous() for t in tensors))


class CpuStepRunner:
    """tokenmill_step_runner's answer on the CPU."""

    def __init__(self, native: DecodeStep, reserve_core: bool = False) -> None:
        self._native = native
        self.reserve_core = reserve_core

    def wrap(self, step: Callable[..., torch.Tensor]) -> NativeDecodeStep:
        """`step` with narrow pure-decode steps on the native decode step."""
        return NativeDecodeStep(step, self._native, self.reserve_core)


def cpu_step_runner(reserve_core: bool = False) -> CpuStepRunner | None:
    """The runner, or None where decode_step.cpp cannot build (every step then runs eagerly).

    `reserve_core`: native steps use one thread fewer than torch's count. Why: beside an API server
    process on the same cores (the engine-core process), that process wakes for every token and
    preempts one of the step's OpenMP threads, and the other then waits for it at every barrier. On
    the 2-core box a served single stream measured 61 tok/s on two threads and 105-111 with the
    core left free (offline on two threads: 236-276). Wide steps keep every thread: there a
    barrier's wait is short against its work (64 streams served: 540 tok/s on two threads, 416 on one).
    """
    native = decode_step()
    return CpuStepRunner(native, reserve_core) if native is not None else None
