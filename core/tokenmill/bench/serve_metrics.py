"""Summarise a serving benchmark: throughput and mean/median/p99 of TTFT, TPOT, ITL and E2E latency."""

from __future__ import annotations

from typing import Any

import numpy as np

from tokenmill.bench.serve_client import RequestResult

PERCENTILES = (50, 99)


def _describe(name: str, values_s: list[float]) -> dict[str, float]:
    ms = np.asarray(values_s, dtype=np.float64) * 1000.0
    if ms.size == 0:
        ms = np.zeros(1)
    figures = {f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(np.median(ms))}
    figures.update({f"p{p}_{name}_ms": float(np.percentile(ms, p)) for p in PERCENTILES if p != 50})
    return figures


def summarize(results: list[RequestResult], duration_s: float) -> dict[str, Any]:
    """vLLM's figures: counts, throughputs, then TTFT, TPOT, ITL and E2EL statistics in ms."""
    ok = [r for r in results if r.success]
    input_tokens = sum(r.prompt_len for r in ok)
    output_tokens = sum(r.output_len for r in ok)
    tpots = [(r.latency - r.ttft) / (r.output_len - 1) for r in ok if r.output_len > 1]
    figures: dict[str, Any] = {
        "successful_requests": len(ok),
        "failed_requests": len(results) - len(ok),
        "duration_s": duration_s,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": len(ok) / duration_s if duration_s else 0.0,
        "output_throughput": output_tokens / duration_s if duration_s else 0.0,
        "total_token_throughput": (input_tokens + output_tokens) / duration_s if duration_s else 0.0,
    }
    figures.update(_describe("ttft", [r.ttft for r in ok]))
    figures.update(_describe("tpot", tpots))
    figures.update(_describe("itl", [gap for r in ok for gap in r.itl]))
    figures.update(_describe("e2el", [r.latency for r in ok]))
    return figures
