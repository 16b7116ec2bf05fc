"""The static_toy execution context and step runner: no_grad, a counted sync, and a shape-recording wrapper."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch

from tokenmill.interfaces import AttentionBatch, ShapeBuckets
from tokenmill.plugin_base import NoGradExecution

from tokenmill_static_toy.attention import static_metadata
from tokenmill_static_toy.recorder import RECORDER

WARMUP_ENV = "TOKENMILL_STATIC_TOY_WARMUP"  # "1": run every token bucket once at start-up, as an XLA plugin compiles


class CountingExecution(NoGradExecution):
    """no_grad, as a tracing backend needs; `sync` stands where xm.mark_step / htcore.mark_step would."""

    def sync(self) -> None:
        """Count the step's sync point."""
        RECORDER.syncs += 1


class RecordingStepRunner:
    """Wraps the step to record each call's token count (where a graph backend would pick its graph).

    With $TOKENMILL_STATIC_TOY_WARMUP=1 and buckets, `wrap` first runs one dummy step per token
    bucket (the shape of the TPU plugin's start-up compilation), counted in RECORDER.warmup_steps.
    """

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.buckets: ShapeBuckets | None = (options or {}).get("buckets")

    def wrap(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """`step` with its input shape noted first (warmed up over the buckets when asked)."""
        def recorded(input_ids, positions, attn_metadata, logits_indices=None):
            RECORDER.step_tokens.add(int(input_ids.shape[0]))
            RECORDER.steps += 1
            return step(input_ids, positions, attn_metadata, logits_indices)

        if self.buckets is not None and os.environ.get(WARMUP_ENV) == "1":
            for num_tokens in self.buckets.token_counts:
                step(*_dummy_step(num_tokens, self.buckets.block_table_widths[0]), None)  # logits [T, V]
                RECORDER.warmup_steps += 1
        return recorded


def _dummy_step(num_tokens: int, width: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """ids, positions [T] (zeros) and metadata of one request of T tokens, all written into block 0."""
    zeros = torch.zeros(num_tokens, dtype=torch.int64)  # [T]
    batch = AttentionBatch(
        query_start_loc=torch.tensor([0, num_tokens], dtype=torch.int32),
        seq_lens=torch.tensor([num_tokens], dtype=torch.int32),
        block_tables=torch.zeros(1, width, dtype=torch.int32),  # [1, W]
        slot_mapping=zeros, query_lens_cpu=[num_tokens], seq_lens_cpu=[num_tokens],
        max_query_len=num_tokens, max_seq_len=num_tokens)
    return zeros, zeros, static_metadata(batch)
