"""Prometheus metrics under `tokenmill:`: engine gauges and counters, request latency histograms."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                    40.0, 80.0, 160.0, 640.0)
_E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                480.0, 960.0, 1920.0)

# (metric name, help, EngineStats attribute); counters get `_total` appended on exposition.
_GAUGES = (
    ("tokenmill:num_requests_running", "Requests in the running batch.", "num_running"),
    ("tokenmill:num_requests_waiting", "Requests queued for admission.", "num_waiting"),
    ("tokenmill:kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0..1).", "kv_usage"),
    ("tokenmill:kv_cache_free_blocks", "KV-cache blocks free (cached prefixes count as free).", "num_free_blocks"),
    ("tokenmill:kv_cache_total_blocks", "KV-cache blocks in the pool.", "num_total_blocks"),
    ("tokenmill:kv_cache_cached_blocks", "KV-cache blocks registered in the prefix cache (in use or free).",
     "num_cached_blocks"),
)
_COUNTERS = (
    ("tokenmill:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", "prefix_queries"),
    ("tokenmill:prefix_cache_hits", "Prompt tokens found in the prefix cache.", "prefix_hits"),
    ("tokenmill:prompt_tokens", "Prompt tokens of admitted requests.", "prompt_tokens_total"),
    ("tokenmill:generation_tokens", "Generated tokens.", "generation_tokens_total"),
    ("tokenmill:num_aborted_requests", "Requests aborted (client gone, shutdown or failure).", "num_aborted_total"),
    ("tokenmill:num_preemptions", "Requests preempted for lack of KV blocks.", "num_preemptions_total"),
)


class _EngineCollector(Collector):
    """Reads the step loop's latest EngineStats snapshot at scrape time (never the engine itself)."""

    def __init__(self, snapshot: Callable[[], Any]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        stats = self._snapshot()
        if stats is None:
            return
        for name, doc, attr in _GAUGES:
            yield GaugeMetricFamily(name, doc, value=float(getattr(stats, attr, 0)))
        for name, doc, attr in _COUNTERS:
            yield CounterMetricFamily(name, doc, value=float(getattr(stats, attr, 0)))


class ServerMetrics:
    """One registry per server; implements AsyncEngine's RequestListener for the latency histograms.

    The listener methods run on the step-loop thread; prometheus-client metrics are thread-safe.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.ttft = Histogram("tokenmill:time_to_first_token_seconds", "Time from arrival to the first token.",
                              buckets=_LATENCY_BUCKETS, registry=reg)
        self.itl = Histogram("tokenmill:inter_token_latency_seconds", "Time between two outputs of a request.",
                             buckets=_LATENCY_BUCKETS, registry=reg)
        self.e2e = Histogram("tokenmill:e2e_request_latency_seconds", "Time from arrival to the last token.",
                             buckets=_E2E_BUCKETS, registry=reg)
        self.success = Counter("tokenmill:request_success", "Requests finished, by finish reason.",
                               ["finished_reason"], registry=reg)
        self.errors = Counter("tokenmill:request_errors", "Requests answered with an error, by HTTP status.",
                              ["status"], registry=reg)

    def watch_engine(self, snapshot: Callable[[], Any]) -> None:
        """Expose the engine gauges and counters read from `snapshot()` (an EngineStats or None)."""
        self.registry.register(_EngineCollector(snapshot))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    # RequestListener
    def on_first_token(self, ttft_s: float) -> None:
        self.ttft.observe(ttft_s)

    def on_next_tokens(self, gap_s: float) -> None:
        self.itl.observe(gap_s)

    def on_finished(self, e2e_s: float, finish_reason: str | None) -> None:
        self.e2e.observe(e2e_s)
        self.success.labels(finished_reason=finish_reason or "unknown").inc()

    def on_error(self, status: int) -> None:
        self.errors.labels(status=str(status)).inc()
