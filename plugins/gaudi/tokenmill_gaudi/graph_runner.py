"""HPU graphs for every bucketed step: one graph per padded shape, replayed through static buffers.

The core pads every step to a bucket (static_shapes), so the step's shape key (T, B, W and the
logits rows R) names its graph. The first step of a shape copies its inputs into fresh static
buffers and records the step over them (runtime().capture); later steps of that shape copy their
inputs into those buffers and replay. The output is the graph's own tensor, valid until the next
call. Metadata other than GaudiMetadata, and enforce_eager, run the step as is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

from tokenmill_gaudi.attention import GaudiMetadata
from tokenmill_gaudi.runtime import runtime

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Graph:
    graph: Any
    buffers: tuple[torch.Tensor, ...]  # ids, positions, metadata fields..., logits rows (if any)
    output: torch.Tensor


def _shape_key(tensors: tuple[torch.Tensor | None, ...]) -> tuple:
    return tuple(None if t is None else (tuple(t.shape), t.dtype) for t in tensors)


class HpuGraphStep:
    """The wrapped step (interfaces.Step): captures a graph per shape, then replays it."""

    def __init__(self, step: Callable[..., torch.Tensor]) -> None:
        self.step = step
        self.graphs: dict[tuple, _Graph] = {}
        self.replays = 0

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: Any,
                 logits_indices: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(metadata, GaudiMetadata):
            return self.step(input_ids, positions, metadata, logits_indices)
        inputs = (input_ids, positions, *metadata.tensors(), logits_indices)
        key = _shape_key(inputs)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(inputs)
            return entry.output
        for buffer, value in zip(entry.buffers, inputs):
            if value is not None:
                buffer.copy_(value)
        entry.graph.replay()
        self.replays += 1
        return entry.output

    def _capture(self, inputs: tuple[torch.Tensor | None, ...]) -> _Graph:
        """Static copies of `inputs`, and the step recorded over them."""
        buffers = tuple(None if t is None else t.clone() for t in inputs)
        ids, pos, slots, reqs, positions, tables, rows = buffers
        metadata = GaudiMetadata(slots, reqs, positions, tables)
        graph, output = runtime().capture(lambda: self.step(ids, pos, metadata, rows))
        log.debug("captured an HPU graph for step shape %s (%d graphs)", _shape_key(inputs), len(self.graphs) + 1)
        return _Graph(graph, buffers, output)


class HpuGraphRunner:
    """The StepRunner: HpuGraphStep around the step, or the step itself under enforce_eager."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.enforce_eager = bool(options.get("enforce_eager", False))

    def wrap(self, step: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """`step` under enforce_eager, else an HpuGraphStep over it."""
        return step if self.enforce_eager else HpuGraphStep(step)
