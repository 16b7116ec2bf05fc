"""Prints a serving benchmark's figures in vLLM's sectioned, unit-labelled layout."""

from __future__ import annotations

from typing import Any

WIDTH = 50
# (figure key, label) in print order; a None key opens a section titled by the label.
_LINES: tuple[tuple[str | None, str], ...] = (
    ("successful_requests", "Successful requests:"),
    ("failed_requests", "Failed requests:"),
    ("max_concurrency", "Maximum request concurrency:"),
    ("request_rate", "Request rate configured (req/s):"),
    ("duration_s", "Benchmark duration (s):"),
    ("total_input_tokens", "Total input tokens:"),
    ("total_output_tokens", "Total generated tokens:"),
    ("request_throughput", "Request throughput (req/s):"),
    ("output_throughput", "Output token throughput (tok/s):"),
    ("total_token_throughput", "Total token throughput (tok/s):"),
    *((key, label) for name, title in (("ttft", "Time to First Token"),
                                       ("tpot", "Time per Output Token (excl. 1st token)"),
                                       ("itl", "Inter-token Latency"), ("e2el", "End-to-end Latency"))
      for key, label in ((None, title), (f"mean_{name}_ms", f"Mean {name.upper()} (ms):"),
                         (f"median_{name}_ms", f"Median {name.upper()} (ms):"),
                         (f"p99_{name}_ms", f"P99 {name.upper()} (ms):"))),
)


def format_summary(figures: dict[str, Any]) -> str:
    """The summary block: counts and throughputs, then one section per latency figure."""
    lines = ["{:=^{w}}".format(" Serving Benchmark Result ", w=WIDTH)]
    for key, label in _LINES:
        if key is None:
            lines.append("{:-^{w}}".format(label, w=WIDTH))
        elif key in figures:
            lines.append(f"{label:<40}{_shown(key, figures[key]):>10}")
    lines.append("=" * WIDTH)
    return "\n".join(lines)


def _shown(key: str, value: Any) -> str:
    if value is None:
        return "inf" if key == "request_rate" else "unlimited" if key == "max_concurrency" else "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)
