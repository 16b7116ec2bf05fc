"""Runs the model on one step's inputs and returns the logits the sampler and logprobs need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tokenmill.sched.output import SchedulerOutput
from tokenmill.worker.dummy_batch import first_tokens_batch
from tokenmill.worker.padding import StepPadding
from tokenmill.worker.step_inputs import StepInputs, build_step_inputs


@dataclass(slots=True)
class RunnerOutput:
    """Float32 logits of one step: one row per sampling request, plus prompt rows where asked.

    On static-shape platforms sample_logits keeps the padded batch's rows: its first
    len(sample_ids) rows are the sampling requests', the rest are padding to be discarded.
    """

    sample_ids: list[str]
    sample_logits: torch.Tensor  # float32 [B_s or padded B, V]
    prompt_logits: dict[str, tuple[int, torch.Tensor]] = field(default_factory=dict)  # id -> (first position, [n, V])


@dataclass(slots=True)
class PendingTokens:
    """The previous step's sampled tokens while their values are still on the device (async scheduling)."""

    token_ids: torch.Tensor  # int64 [P] on the device, as the sampler returned them
    rows: dict[str, int]  # request id -> its row of token_ids


def fill_pending(input_ids: torch.Tensor, inputs: StepInputs, token_ids: torch.Tensor) -> None:
    """input_ids int64 [T] in place: the pending rows take their tokens from token_ids [P], on the device."""
    input_ids.index_copy_(0, inputs.pending_rows, token_ids.index_select(0, inputs.pending_src))  # [N_p]


class ModelRunner:
    """Owns the model, its KV caches and the attention backend for the life of an engine.

    Every step, prefill, mixed or decode, runs through one callable (interfaces.Step), which the
    platform's step runner wraps (CUDA graphs, HPU graphs, XLA): token ids in, logits of the
    asked rows out, output head included.
    """

    def __init__(self, model: Any, attn_backend: Any, kv_caches: list[torch.Tensor], block_size: int,
                 device: torch.device, step_runner: Any = None, padding: StepPadding | None = None) -> None:
        self.model = model
        self.attn_backend = attn_backend
        self.kv_caches = kv_caches  # a functional backend's forward replaces the entries each step
        self.block_size = block_size
        self.device = device
        self.padding = padding
        self._step = self._logits_step if step_runner is None else step_runner.wrap(self._logits_step)

    def _logits_step(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: Any,
                     logits_indices: torch.Tensor | None = None) -> torch.Tensor:
        """ids int64 [T], positions int64 [T] -> float32 logits [T, V], or [R, V] of rows `logits_indices` [R]."""
        hidden = self.model(input_ids, positions, self.kv_caches, metadata)  # [T, H]
        if logits_indices is not None:
            hidden = hidden.index_select(0, logits_indices)  # [R, H]
        return self.model.compute_logits(hidden)

    def execute(self, out: SchedulerOutput, want_prompt_logits: set[str] = frozenset(),
                pending: PendingTokens | None = None) -> RunnerOutput:
        """Run one step; `want_prompt_logits` names requests whose prompt rows need logits too.

        `pending` (async scheduling) holds the previous step's sampled tokens, still on the device,
        for the requests scheduled over them. The caller enters the platform's execution context
        (grad mode) around this call.
        """
        inputs = build_step_inputs(out, self.block_size, self.device, self.padding,
                                   pending.rows if pending is not None else None)
        if pending is not None and inputs.pending_rows.numel():
            fill_pending(inputs.input_ids, inputs, pending.token_ids)
        prompt_ids = want_prompt_logits & inputs.query_ranges.keys()
        indices = None if prompt_ids or inputs.all_rows_sample else inputs.sample_rows
        logits = self.forward_batch(inputs.input_ids, inputs.positions, inputs.batch, indices)  # [T or B_s, V]
        if prompt_ids:
            return self._with_prompt_rows(logits, inputs, out, prompt_ids)
        return RunnerOutput(inputs.sample_ids, logits)

    def forward_batch(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: Any,
                      logits_indices: torch.Tensor | None) -> torch.Tensor:
        """The model on one step's flat inputs and AttentionBatch: float32 logits of rows `logits_indices`.

        A tensor-parallel driver overrides it to broadcast the inputs first; its workers call it
        with what they received.
        """
        return self._step(input_ids, positions, self.attn_backend.build_metadata(batch), logits_indices)

    def warm_up(self, execution: Any) -> None:
        """One pure-decode step of one token through the wrapped step, before the first request.

        A step runner that captures or compiles on its first steps (the CUDA plugin's graphs, the
        Triton kernels' variants) then does so at start-up rather than inside a request's first
        token. Static-shape platforms are left alone: their step runners warm up every bucket as
        they wrap the step. The dummy token's key and value land in slot 0, which no request has
        written yet, and every request writes a position before it reads it. Each rank of tensor
        parallelism runs this itself, in the same order, so no broadcast is needed.
        """
        if self.padding is not None:
            return
        batch = first_tokens_batch(1, 1, self.device)  # block table [[0]], slot 0
        ids = torch.zeros(1, dtype=torch.int64, device=self.device)  # [1]
        with execution.guard():
            self._step(ids, torch.zeros_like(ids), self.attn_backend.build_metadata(batch), None)  # [1, V]
            execution.sync()

    def _with_prompt_rows(self, logits: torch.Tensor, inputs: StepInputs, out: SchedulerOutput,
                          prompt_ids: set[str]) -> RunnerOutput:
        """Every row's logits [T, V] -> the sampled rows' and the asked prompt rows'."""
        result = RunnerOutput(inputs.sample_ids, logits.index_select(0, inputs.sample_rows))
        for request_id in prompt_ids:
            begin, end = inputs.query_ranges[request_id]
            first_position = next(s.start for s in out.scheduled if s.request.request_id == request_id)
            result.prompt_logits[request_id] = (first_position, logits[begin:end])  # [n, V]
        return result
