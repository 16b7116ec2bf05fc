"""Logs throughput and queue figures every few seconds while the server has work, as vLLM does."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tokenmill.engine.stats import EngineStats

log = logging.getLogger("tokenmill.stats")


def format_stats(now: EngineStats, before: EngineStats, seconds: float) -> str:
    """One line: prompt and generation throughput over the interval, queue sizes, KV use, prefix hits."""
    prompt_rate = (now.prompt_tokens_total - before.prompt_tokens_total) / seconds
    gen_rate = (now.generation_tokens_total - before.generation_tokens_total) / seconds
    queried = now.prefix_queries - before.prefix_queries
    hit_rate = (now.prefix_hits - before.prefix_hits) / queried if queried else 0.0
    return (f"avg prompt throughput: {prompt_rate:.1f} tokens/s, avg generation throughput: {gen_rate:.1f} "
            f"tokens/s, running: {now.num_running} reqs, waiting: {now.num_waiting} reqs, KV cache usage: "
            f"{now.kv_usage * 100:.1f}%, prefix cache hit rate: {hit_rate * 100:.1f}%, "
            f"preemptions: {now.num_preemptions_total}")


def start_stats_logger(read: Callable[[], EngineStats | None], interval_s: float) -> threading.Thread:
    """A daemon thread logging format_stats every `interval_s` while anything ran or waits."""
    thread = threading.Thread(target=_loop, args=(read, interval_s), name="tokenmill-stats-logger", daemon=True)
    thread.start()
    return thread


def _loop(read: Callable[[], EngineStats | None], interval_s: float) -> None:
    before, t_before = read(), time.monotonic()
    while True:
        time.sleep(interval_s)
        now, t_now = read(), time.monotonic()
        if now is None or before is None:
            before, t_before = now, t_now
            continue
        if _busy(now, before):
            log.info(format_stats(now, before, max(t_now - t_before, 1e-9)))
        before, t_before = now, t_now


def _busy(now: EngineStats, before: EngineStats) -> bool:
    return bool(now.num_running or now.num_waiting or now.num_steps != before.num_steps)
