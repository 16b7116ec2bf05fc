"""EngineStats: the counters and gauges the engine exposes to metrics and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class EngineStats:
    """A snapshot taken between steps; totals count since the engine started."""

    num_running: int
    num_waiting: int
    kv_usage: float  # fraction of KV blocks in use, 0..1
    num_free_blocks: int
    num_total_blocks: int
    num_cached_blocks: int
    prefix_queries: int  # prompt tokens looked up in the prefix cache
    prefix_hits: int  # of those, tokens found
    prompt_tokens_total: int  # prompt tokens of admitted requests
    generation_tokens_total: int  # tokens sampled
    tokens_computed_total: int  # tokens run through the model (prefill chunks + decodes)
    num_preemptions_total: int
    num_aborted_total: int
    num_steps: int
