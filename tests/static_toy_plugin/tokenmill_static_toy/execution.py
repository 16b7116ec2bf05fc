"""The static_toy execution context and step runner: no_grad, a counted sync, and a shape-recording wrapper."""

from __future__ import annotations

from typing import Any, Callable

from tokenmill.plugin_base import NoGradExecution

from tokenmill_static_toy.recorder import RECORDER


class CountingExecution(NoGradExecution):
    """no_grad, as a tracing backend needs; `sync` stands where xm.mark_step / htcore.mark_step would."""

    def sync(self) -> None:
        """Count the step's sync point."""
        RECORDER.syncs += 1


class RecordingStepRunner:
    """Wraps the step to record each call's token count (where a graph backend would pick its graph)."""

    def wrap(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """`step` with its input shape noted first."""
        def recorded(input_ids, positions, attn_metadata, logits_indices=None):
            RECORDER.step_tokens.add(int(input_ids.shape[0]))
            RECORDER.steps += 1
            return step(input_ids, positions, attn_metadata, logits_indices)

        return recorded
