"""Chooses each weight shape's GEMV tile configuration by timing the candidates on the model's own weights.

The best (BLOCK_N, BLOCK_K, num_warps) differs by shape and by card: on an H100 (2, 2048, 8) won
every Llama-3-8B linear, while on an H200 (4, 1024, 4) wins `o` and `down` and (2, 1024, 4) wins
`qkv` (benchmarks/cuda/bench_gemv.py). So a fixed table would be wrong somewhere. Instead, the
linears a warm-up step sends to the GEMV are recorded by shape, and each shape's candidates are
timed as CUDA-graph replays over every recorded weight of that shape, in model order. That is the
access pattern of a decode step (each weight read once, the L2 holding none of them), so the
choice needs no scratch memory and no assumption about the card. Choices are kept per process,
keyed by device, shape and dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

CANDIDATES = ((2, 2048, 8), (2, 1024, 4), (4, 1024, 4), (1, 1024, 4))
REPLAYS = 5
ENABLED = True  # False keeps DEFAULT_CONFIG everywhere (the benchmarks set it to compare)

Key = tuple[int, int, torch.dtype, int]  # (N, K, dtype, device index)
_chosen: dict[Key, tuple[int, int, int]] = {}


def shape_key(x: torch.Tensor, weight: torch.Tensor) -> Key:
    return weight.shape[0], weight.shape[1], weight.dtype, x.device.index or 0


def chosen_config(x: torch.Tensor, weight: torch.Tensor) -> tuple[int, int, int] | None:
    """The tuned configuration for this weight's shape on x's device, or None before tuning."""
    return _chosen.get(shape_key(x, weight))


class ShapeRecorder:
    """Collects, during a warm-up step, one input row and every weight of each GEMV shape."""

    def __init__(self) -> None:
        self.groups: dict[Key, tuple[torch.Tensor, list[torch.Tensor]]] = {}

    def record(self, x: torch.Tensor, weight: torch.Tensor) -> None:
        key = shape_key(x, weight)
        if key in _chosen:
            return
        entry = self.groups.setdefault(key, (x.detach().clone(), []))
        if all(w.data_ptr() != weight.data_ptr() for w in entry[1]):
            entry[1].append(weight)

    def tune(self, gemv: Callable[..., torch.Tensor]) -> dict[Key, tuple[int, int, int]]:
        """Time every candidate on each recorded shape; keep and return the fastest of each."""
        picked = {}
        for key, (x, weights) in self.groups.items():
            times = {cfg: _graph_seconds(lambda c=cfg: [gemv(x, w, config=c) for w in weights]) for cfg in CANDIDATES}
            best = min(times, key=times.get)
            picked[key] = _chosen[key] = best
            nbytes = sum(w.numel() * w.element_size() for w in weights)
            log.info("GEMV %dx%d %s (%d weights): tile %s at %.0f GB/s (%s)", key[0], key[1],
                     str(key[2]).removeprefix("torch."), len(weights), best, nbytes / times[best] / 1e9,
                     ", ".join(f"{c}: {nbytes / t / 1e9:.0f}" for c, t in times.items()))
        self.groups.clear()
        return picked


def _graph_seconds(fn: Callable[[], object]) -> float:
    """Seconds of one replay of `fn` recorded in a CUDA graph, after an eager warm-up that compiles it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(REPLAYS):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e-3 / REPLAYS


def choices() -> dict[str, tuple[int, int, int]]:
    """Every choice so far, as "NxK dtype" -> tile (for logs and benchmark reports)."""
    return {f"{n}x{k} {str(dt).removeprefix('torch.')}": cfg for (n, k, dt, _), cfg in _chosen.items()}


def forget() -> None:
    """Drop every choice (tests and benchmarks that compare configurations)."""
    _chosen.clear()
