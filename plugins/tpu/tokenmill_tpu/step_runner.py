"""The XLA step runner: cuts each step's graph at the logits, and compiles every bucket's graph at start-up.

The core pads every step to a bucket, so the forward graph XLA traces depends only on
(T, B, W, whether rows are selected): `wrap` runs one dummy step per such shape before the first
request (warm-up) and ends it with a sync, so each is compiled then, not while serving. In
serving, the wrapped step syncs right after the forward, which keeps the forward graph the same
whatever sampling follows it (sampling is its own small graph, cut at the core's per-step sync).
XLA's persistent cache ($TOKENMILL_TPU_XLA_CACHE) keeps compiled graphs across restarts.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import torch

from tokenmill.interfaces import AttentionBatch, ShapeBuckets

from tokenmill_tpu import xla_runtime
from tokenmill_tpu.attention import build_tpu_metadata
from tokenmill_tpu.buckets import step_shapes

log = logging.getLogger(__name__)
WARMUP_ENV = "TOKENMILL_TPU_WARMUP"  # "0": compile on first use instead of at start-up
CACHE_ENV = "TOKENMILL_TPU_XLA_CACHE"  # a directory: XLA's persistent compilation cache


def _packed(parts: list[list[int]], dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """The lists end to end in one tensor moved to `device` once, as 1-D views (as the core packs them)."""
    whole = torch.tensor([v for part in parts for v in part], dtype=dtype).to(device)
    views, offset = [], 0
    for part in parts:
        views.append(whole[offset: offset + len(part)])
        offset += len(part)
    return views


def dummy_inputs(num_tokens: int, num_reqs: int, width: int, decode: bool, device: torch.device):
    """(input_ids, positions, AttentionBatch, sample_rows) of one padded step shape, laid out as the core's
    worker/step_inputs.py lays them out: the int64 lists (tokens, positions, slots, sampled rows) packed in
    one tensor and the int32 ones (query starts, sequence lengths, block tables) in another, each field a
    view. XLA keys a graph by its whole trace, views included, so the warm-up must trace what serving
    traces; a layout change in the core costs one compilation per shape at first use, never a wrong result.
    Every token is written into block 0, which no request holds before the engine serves."""
    query_lens = [1] * num_reqs if decode else [num_tokens] + [0] * (num_reqs - 1)
    zeros = [0] * num_tokens
    tokens, positions, slots, rows = _packed([zeros, zeros, zeros, list(range(num_reqs))], torch.int64, device)
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    starts_t, seq_lens_t, tables = _packed([starts, query_lens, [0] * (num_reqs * width)], torch.int32, device)
    batch = AttentionBatch(query_start_loc=starts_t, seq_lens=seq_lens_t, block_tables=tables.view(num_reqs, width),
                           slot_mapping=slots, query_lens_cpu=query_lens, seq_lens_cpu=list(query_lens),
                           max_query_len=max(query_lens), max_seq_len=max(query_lens))
    return tokens, positions, batch, rows


class XlaStep:
    """The wrapped step (interfaces.Step): the forward, then a sync that compiles or reuses its graph."""

    def __init__(self, step: Callable[..., torch.Tensor], buckets: ShapeBuckets | None) -> None:
        self.step = step
        self.buckets = buckets
        self.device = xla_runtime.device()
        self.warmup_compiles = 0  # XLA compilations the warm-up made
        self.forward_compiles = 0  # compilations made by the forward itself (the warm-up's included)
        self.warmup_seconds = 0.0

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: Any,
                 logits_indices: torch.Tensor | None = None) -> torch.Tensor:
        before = xla_runtime.compile_count()
        logits = self.step(input_ids, positions, metadata, logits_indices)
        xla_runtime.sync()
        self.forward_compiles += xla_runtime.compile_count() - before
        return logits

    def warm_up(self) -> int:
        """Compile the forward graph of every bucket shape now; returns the compilations it took."""
        if self.buckets is None:
            return 0
        start, before = time.perf_counter(), xla_runtime.compile_count()
        for num_tokens, num_reqs, width, selected in step_shapes(self.buckets):
            ids, positions, batch, rows = dummy_inputs(num_tokens, num_reqs, width, not selected, self.device)
            self(ids, positions, build_tpu_metadata(batch, self.device), rows if selected else None)
        self.warmup_compiles = xla_runtime.compile_count() - before
        self.warmup_seconds = time.perf_counter() - start
        log.info("tpu warm-up: %d step shapes, %d XLA compilations in %.1f s", len(step_shapes(self.buckets)),
                 self.warmup_compiles, self.warmup_seconds)
        return self.warmup_compiles


class XlaStepRunner:
    """The StepRunner: XlaStep around the step, warmed up over the buckets unless TOKENMILL_TPU_WARMUP=0."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.buckets = options.get("buckets")
        cache = os.environ.get(CACHE_ENV)
        if cache:
            xla_runtime.initialize_cache(cache)

    def wrap(self, step: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """An XlaStep over `step`, its graphs compiled before it returns."""
        wrapped = XlaStep(step, self.buckets)
        if os.environ.get(WARMUP_ENV, "1") != "0":
            wrapped.warm_up()
        return wrapped
