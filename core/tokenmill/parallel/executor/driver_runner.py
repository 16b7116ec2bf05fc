"""Rank 0's runner and allocator: the engine's own, plus the broadcast that drives the workers."""

from __future__ import annotations

from typing import Any

import torch

from tokenmill.worker.model_runner import ModelRunner


class DriverRunner(ModelRunner):
    """The engine's ModelRunner on rank 0: each step's inputs go to the workers before rank 0 runs it."""

    def __init__(self, executor: Any, *args: Any, **kwargs: Any) -> None:
        """ModelRunner's arguments; a step runner that warms up as it wraps the step runs rank 0's part here.

        Every worker's runner runs the same warm-up (worker.runner_setup), so those collectives
        meet without a broadcast; a rank that falls meanwhile ends start-up with EngineDeadError.
        """
        self._executor = executor
        executor.guarded(lambda: ModelRunner.__init__(self, *args, **kwargs))

    def warm_up(self, execution: Any) -> None:
        """Rank 0's own warm-up step; every worker runs the same one, so its collectives meet theirs."""
        self._executor.guarded(lambda: ModelRunner.warm_up(self, execution))

    def forward_batch(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: Any,
                      logits_indices: torch.Tensor | None) -> torch.Tensor:
        """Broadcast the step, then run rank 0's shard (its collectives meet the workers')."""
        def step() -> torch.Tensor:
            self._executor.sender.send_step(input_ids, positions, batch, logits_indices)
            return super(DriverRunner, self).forward_batch(input_ids, positions, batch, logits_indices)

        return self._executor.guarded(step)


class BroadcastingAllocator:
    """Rank 0's KV allocator: block copies the scheduler asks for happen on every rank's pool."""

    def __init__(self, inner: Any, executor: Any) -> None:
        self._inner = inner
        self._executor = executor

    def copy_blocks(self, kv_caches: list[torch.Tensor], src_to_dst: list[tuple[int, int]]) -> None:
        if not src_to_dst:
            return
        self._executor.guarded(lambda: self._executor.sender.send_copy(src_to_dst))
        self._inner.copy_blocks(kv_caches, src_to_dst)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
