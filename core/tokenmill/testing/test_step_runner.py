"""Conformance: the platform's step runner (graph capture, compilation) gives the unwrapped step's results.

During the engine run every call of the wrapped step is repeated on the plain step with the same
inputs (engine_probe.ComparingStepRunner); logits must agree within tolerances.STEP_LOGITS over
prefill, mixed and decode steps. Platforms with no step runner are skipped: they run the step as is.
"""

from __future__ import annotations

import pytest
import torch

from tokenmill.testing.tolerances import STEP_LOGITS


def test_wrapped_step_equals_the_unwrapped_step(engine_run, engine_dtype, tokenmill_platform):
    _, recording, _ = engine_run
    if not recording.has_step_runner:
        pytest.skip(f"{tokenmill_platform.name} supplies no step runner (tokenmill_step_runner returned None)")
    tolerance = STEP_LOGITS[getattr(torch, engine_dtype)]
    for index, (call, batch) in enumerate(zip(recording.steps, recording.batches)):
        assert call.wrapped.shape == call.unwrapped.shape, (
            f"step {index}: the wrapped step returned {tuple(call.wrapped.shape)}, the step {tuple(call.unwrapped.shape)}")
        torch.testing.assert_close(call.wrapped, call.unwrapped, **tolerance, msg=lambda m, i=index, b=batch: (
            f"step {index} (query_lens {b.query_lens_cpu}): {m}"))
