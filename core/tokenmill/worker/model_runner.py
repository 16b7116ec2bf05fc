"""Runs the model on one step's inputs and returns the logits the sampler and logprobs need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from tokenmill.sched.output import SchedulerOutput
from tokenmill.worker.step_inputs import StepInputs, build_step_inputs


@dataclass(slots=True)
class RunnerOutput:
    """Float32 logits of one step: one row per sampling request, plus prompt rows where asked."""

    sample_ids: list[str]
    sample_logits: torch.Tensor  # float32 [B_s, V]
    prompt_logits: dict[str, tuple[int, torch.Tensor]] = field(default_factory=dict)  # id -> (first position, [n, V])


class ModelRunner:
    """Owns the model, its KV caches and the attention backend for the life of an engine."""

    def __init__(self, model: Any, attn_backend: Any, kv_caches: list[torch.Tensor], block_size: int,
                 device: torch.device, step_runner: Any = None) -> None:
        self.model = model
        self.attn_backend = attn_backend
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.device = device
        self._forward: Callable[..., torch.Tensor] = self._eager_forward
        # A step whose every row samples (decode) goes from token ids to logits in one callable,
        # which the platform's step runner (e.g. CUDA graphs) wraps whole, output head included.
        self._logits_step: Callable[..., torch.Tensor] = self._all_row_logits
        if step_runner is not None:
            self._logits_step = step_runner.wrap(self._all_row_logits)

    def _eager_forward(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: Any) -> torch.Tensor:
        return self.model(input_ids, positions, self.kv_caches, metadata)  # [T, H]

    def _all_row_logits(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: Any) -> torch.Tensor:
        return self.model.compute_logits(self._forward(input_ids, positions, metadata))  # float32 [T, V]

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput, want_prompt_logits: set[str] = frozenset()) -> RunnerOutput:
        """Run one step; `want_prompt_logits` names requests whose prompt rows need logits too."""
        inputs = build_step_inputs(out, self.block_size, self.device)
        metadata = self.attn_backend.build_metadata(inputs.batch)
        if len(inputs.sample_ids) == inputs.input_ids.shape[0] and not want_prompt_logits & inputs.query_ranges.keys():
            # every row samples, so rows and sampling requests line up one to one, in order
            return RunnerOutput(inputs.sample_ids, self._logits_step(inputs.input_ids, inputs.positions, metadata))
        hidden = self._forward(inputs.input_ids, inputs.positions, metadata)  # [T, H]
        result = RunnerOutput(inputs.sample_ids, self._sample_logits(hidden, inputs))
        for request_id in want_prompt_logits & inputs.query_ranges.keys():
            result.prompt_logits[request_id] = self._prompt_logits(hidden, inputs, out, request_id)
        return result

    def _sample_logits(self, hidden: torch.Tensor, inputs: StepInputs) -> torch.Tensor:
        if not inputs.sample_ids:
            return hidden.new_empty((0, 0), dtype=torch.float32)
        return self.model.compute_logits(hidden.index_select(0, inputs.sample_rows))  # [B_s, V]

    def _prompt_logits(self, hidden: torch.Tensor, inputs: StepInputs, out: SchedulerOutput,
                       request_id: str) -> tuple[int, torch.Tensor]:
        begin, end = inputs.query_ranges[request_id]
        first_position = next(s.start for s in out.scheduled if s.request.request_id == request_id)
        return first_position, self.model.compute_logits(hidden[begin:end])  # [n, V]
