"""CUDA graphs for decode steps: capture per padded batch size, replay through static buffers.

The wrapped step is `step(input_ids [T], positions [T], attn_metadata, *extra) -> [T, ...]`, one
output row per token (the model runner wraps ids -> logits [T, V], the output head included). The
first pure-decode step (the engine's start-up warm-up, ModelRunner.warm_up) captures every size, so
no request waits for a capture. A pure-decode step of B requests (T == B) is padded to the smallest
captured size >= B: its ids, positions and Triton metadata are copied into that graph's static
buffers (padding rows get seq_len 0 and slot -1, so they write no cache and read no keys), the
graph is replayed, and rows [:B] of its output are returned as a view, valid until the next call.
Every other step (prefill chunks, mixed steps, batches above the largest size, other metadata
types) runs `step` eagerly. `extra` arguments (e.g. the KV cache list) are baked into the graphs:
when their tensors change, the graphs are recaptured. Graphs of at most `gemv_rows` rows record
their linears as Triton GEMVs (gemv_capture.py), each shape's tile timed on the model's weights
first (tokenmill_triton.gemv_tuning), and the Triton kernels launch with PDL
(tokenmill_triton.pdl).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from tokenmill_triton import gemv_tuning
from tokenmill_triton.gemv import gemv
from tokenmill_triton.metadata import TritonAttentionMetadata, fill_static, static_decode_metadata

from tokenmill_cuda import gemv_capture

log = logging.getLogger(__name__)
DEFAULT_TABLE_WIDTH = 256  # blocks per sequence the static buffers start with (4k tokens at S = 16)


def default_capture_sizes(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then every 8 up to 64, then every 16, up to max_num_seqs (always included)."""
    sizes = [1, 2, 4] + list(range(8, 65, 8)) + list(range(80, max_num_seqs + 1, 16))
    return sorted({s for s in sizes if s <= max_num_seqs} | {max_num_seqs})


def _fingerprint(value: Any) -> Any:
    """What must stay the same for a graph to be valid: tensors by address and shape."""
    if isinstance(value, torch.Tensor):
        return ("t", value.data_ptr(), tuple(value.shape), value.dtype)
    if isinstance(value, (list, tuple)):
        return tuple(_fingerprint(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _fingerprint(v)) for k, v in sorted(value.items()))
    return ("o", id(value))


@dataclass(slots=True)
class _Captured:
    graph: torch.cuda.CUDAGraph
    input_ids: torch.Tensor  # [size]
    positions: torch.Tensor  # [size]
    metadata: TritonAttentionMetadata
    output: torch.Tensor  # [size, ...]


class CudaGraphStep:
    """The wrapped step: replays a captured graph for pure-decode batches, else runs eagerly."""

    def __init__(self, step: Callable[..., torch.Tensor], sizes: list[int], max_blocks_per_seq: int = 0) -> None:
        self.step = step
        self.sizes = sorted(sizes)
        self.width = max_blocks_per_seq or DEFAULT_TABLE_WIDTH  # static block-table width; grows on demand
        self.graphs: dict[int, _Captured] = {}
        self.pool = None
        self.fingerprint: Any = None
        self.capture_seconds = 0.0
        self.captured_all = False  # later recaptures (the baked-in tensors moved) go one size at a time
        self.gemv_rows = gemv_capture.MAX_ROWS  # 0 keeps cuBLAS in every graph

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, attn_metadata: Any, *extra: Any) -> torch.Tensor:
        num = input_ids.shape[0]
        if not self._replayable(num, attn_metadata):
            return self.step(input_ids, positions, attn_metadata, *extra)
        self._check_reuse(attn_metadata, extra)
        if not self.captured_all:  # the first pure-decode step (the engine's warm-up): every size at once
            self.capture_all(attn_metadata, *extra, input_dtype=input_ids.dtype)
        size = self.sizes[bisect.bisect_left(self.sizes, num)]
        entry = self.graphs.get(size) or self._capture(size, input_ids, positions, attn_metadata, extra)
        entry.input_ids[:num].copy_(input_ids, non_blocking=True)
        entry.positions[:num].copy_(positions, non_blocking=True)
        fill_static(entry.metadata, attn_metadata)
        entry.graph.replay()
        return entry.output[:num]

    def _replayable(self, num: int, md: Any) -> bool:
        return (
            isinstance(md, TritonAttentionMetadata)
            and md.is_pure_decode
            and md.num_decodes == num
            and 0 < num <= self.sizes[-1]
        )

    def _check_reuse(self, md: TritonAttentionMetadata, extra: tuple) -> None:
        """Drop every graph when the baked-in tensors moved or the block table outgrew the buffers."""
        fingerprint = _fingerprint(extra)
        width = md.block_tables.shape[1]
        if fingerprint != self.fingerprint or width > self.width:
            if self.graphs:
                log.info("recapturing CUDA graphs (block-table width %d, arguments changed: %s)", width, fingerprint != self.fingerprint)
            self.graphs.clear()
            self.pool = None  # a pool whose graphs are gone cannot take new captures
            self.fingerprint = fingerprint
            self.width = max(self.width, 1 << (width - 1).bit_length())

    def _capture(self, size: int, input_ids: torch.Tensor, positions: torch.Tensor, md: TritonAttentionMetadata, extra: tuple) -> _Captured:
        """Warm the kernels up for `size`, then record one step on the shared memory pool."""
        start = time.perf_counter()
        static = static_decode_metadata(size, self.width, md.shape, md.seq_lens.device)
        ids = torch.zeros(size, dtype=input_ids.dtype, device=input_ids.device)
        pos = torch.zeros(size, dtype=positions.dtype, device=positions.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        recorder = gemv_tuning.ShapeRecorder() if size <= self.gemv_rows and gemv_tuning.ENABLED else None
        with torch.cuda.stream(side), self._linears(size, recorder):
            self.step(ids, pos, static, *extra)  # compiles Triton kernels outside the capture
        torch.cuda.current_stream().wait_stream(side)
        if recorder is not None:
            recorder.tune(gemv)  # each GEMV shape's tile, timed on these weights before the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool), self._linears(size):
            output = self.step(ids, pos, static, *extra)
        self.pool = graph.pool()
        entry = _Captured(graph, ids, pos, static, output)
        self.graphs[size] = entry
        self.capture_seconds += time.perf_counter() - start
        return entry

    def _linears(self, size: int, recorder: gemv_tuning.ShapeRecorder | None = None) -> contextlib.AbstractContextManager:
        if size > self.gemv_rows:
            return contextlib.nullcontext()
        return gemv_capture.GemvCapture(self.gemv_rows, recorder)

    def capture_all(self, example_metadata: TritonAttentionMetadata, *extra: Any,
                    input_dtype: torch.dtype = torch.int64) -> float:
        """Capture every size now, largest first (the pool then fits the smaller ones); returns seconds.

        `example_metadata` is any metadata from the backend (only its shape and block-table width
        are read); `extra` are the arguments later calls will pass after the metadata.
        """
        start = time.perf_counter()
        self.captured_all = True
        self._check_reuse(example_metadata, extra)
        device = example_metadata.seq_lens.device
        with torch.inference_mode():
            for size in reversed(self.sizes):
                if size not in self.graphs:
                    ids = torch.zeros(size, dtype=input_dtype, device=device)
                    self._capture(size, ids, ids, example_metadata, extra)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        log.info("captured %d CUDA graphs (decode batches %d to %d) in %.1f s", len(self.sizes), self.sizes[0],
                 self.sizes[-1], seconds)
        return seconds


class CudaGraphRunner:
    """The StepRunner: wraps a step in CudaGraphStep, or returns it as is under enforce_eager.

    Options read: enforce_eager (False), max_num_seqs (256), cuda_graph_sizes (default sizes up
    to max_num_seqs), max_model_len and block_size (to size the static block tables up front;
    otherwise they grow to the widest table seen).
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self.enforce_eager = bool(options.get("enforce_eager", False))
        max_num_seqs = int(options.get("max_num_seqs") or 256)
        self.sizes = sorted(options.get("cuda_graph_sizes") or default_capture_sizes(max_num_seqs))
        max_len, block = options.get("max_model_len"), options.get("block_size")
        self.max_blocks_per_seq = -(-int(max_len) // int(block)) if max_len and block else 0

    def wrap(self, step: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """`step` itself under enforce_eager, else a CudaGraphStep around it."""
        if self.enforce_eager:
            return step
        return CudaGraphStep(step, self.sizes, self.max_blocks_per_seq)
