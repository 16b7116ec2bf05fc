"""Prometheus metrics: engine gauges and counters and request latency histograms, each labelled with the
served model's name, under `tokenmill:` names or (--metric-names vllm) vLLM's `vllm:` names."""

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
    ("num_requests_running", "Requests in the running batch.", "num_running"),
    ("num_requests_waiting", "Requests queued for admission.", "num_waiting"),
    ("kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0..1).", "kv_usage"),
    ("kv_cache_free_blocks", "KV-cache blocks free (cached prefixes count as free).", "num_free_blocks"),
    ("kv_cache_total_blocks", "KV-cache blocks in the pool.", "num_total_blocks"),
    ("kv_cache_cached_blocks", "KV-cache blocks registered in the prefix cache (in use or free).",
     "num_cached_blocks"),
)
_COUNTERS = (
    ("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", "prefix_queries"),
    ("prefix_cache_hits", "Prompt tokens found in the prefix cache.", "prefix_hits"),
    ("prompt_tokens", "Prompt tokens of admitted requests.", "prompt_tokens_total"),
    ("generation_tokens", "Generated tokens.", "generation_tokens_total"),
    ("num_aborted_requests", "Requests aborted (client gone, shutdown or failure).", "num_aborted_total"),
    ("num_preemptions", "Requests preempted for lack of KV blocks.", "num_preemptions_total"),
)
# The metrics vLLM exposes under the same name and meaning; with --metric-names vllm these take the
# `vllm:` prefix (so vLLM's dashboards and routers read them unchanged) and the rest keep `tokenmill:`.
VLLM_NAMES = frozenset({
    "num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "prefix_cache_queries",
    "prefix_cache_hits", "prompt_tokens", "generation_tokens", "num_preemptions", "request_success",
    "time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
})
METRIC_NAMINGS = ("tokenmill", "vllm")
MODEL_LABEL = "model_name"


def metric_name(base: str, naming: str = "tokenmill") -> str:
    """The exposed name of metric `base` under `naming` (tokenmill or vllm)."""
    if naming not in METRIC_NAMINGS:
        raise ValueError(f"--metric-names must be one of {', '.join(METRIC_NAMINGS)}, got {naming!r}")
    return f"vllm:{base}" if naming == "vllm" and base in VLLM_NAMES else f"tokenmill:{base}"


class _EngineCollector(Collector):
    """Reads the step loop's latest EngineStats snapshot at scrape time (never the engine itself)."""

    def __init__(self, snapshot: Callable[[], Any], model_name: str, naming: str) -> None:
        self._snapshot, self._model, self._naming = snapshot, model_name, naming

    def collect(self) -> Iterator[Metric]:
        stats = self._snapshot()
        if stats is None:
            return
        for kind, table in ((GaugeMetricFamily, _GAUGES), (CounterMetricFamily, _COUNTERS)):
            for base, doc, attr in table:
                family = kind(metric_name(base, self._naming), doc, labels=[MODEL_LABEL])
                family.add_metric([self._model], float(getattr(stats, attr, 0)))
                yield family


class ServerMetrics:
    """One registry per server; implements AsyncEngine's RequestListener for the latency histograms.

    The listener methods run on the step-loop thread; prometheus-client metrics are thread-safe.
    """

    def __init__(self, model_name: str = "", naming: str = "tokenmill") -> None:
        self.registry = CollectorRegistry()
        self.model_name, self.naming = model_name, naming
        reg, name, label = self.registry, (lambda base: metric_name(base, naming)), [MODEL_LABEL]
        self.ttft = Histogram(name("time_to_first_token_seconds"), "Time from arrival to the first token.", label,
                              buckets=_LATENCY_BUCKETS, registry=reg).labels(model_name)
        self.itl = Histogram(name("inter_token_latency_seconds"), "Time between two outputs of a request.", label,
                             buckets=_LATENCY_BUCKETS, registry=reg).labels(model_name)
        self.e2e = Histogram(name("e2e_request_latency_seconds"), "Time from arrival to the last token.", label,
                             buckets=_E2E_BUCKETS, registry=reg).labels(model_name)
        self.success = Counter(name("request_success"), "Requests finished, by finish reason.",
                               ["finished_reason", MODEL_LABEL], registry=reg)
        self.errors = Counter(name("request_errors"), "Requests answered with an error, by HTTP status.",
                              ["status", MODEL_LABEL], registry=reg)

    def watch_engine(self, snapshot: Callable[[], Any]) -> None:
        """Expose the engine gauges and counters read from `snapshot()` (an EngineStats or None)."""
        self.registry.register(_EngineCollector(snapshot, self.model_name, self.naming))

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
        self.success.labels(finished_reason=finish_reason or "unknown", model_name=self.model_name).inc()

    def on_error(self, status: int) -> None:
        self.errors.labels(status=str(status), model_name=self.model_name).inc()
