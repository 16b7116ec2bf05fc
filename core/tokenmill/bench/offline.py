"""`bench throughput` and `bench latency`: offline figures from one engine in this process."""

from __future__ import annotations

import statistics
import time

from tokenmill.bench.workload import Workload
from tokenmill.engine.core import EngineCore
from tokenmill.sampling.params import SamplingParams


def run_batch(engine: EngineCore, workload: Workload) -> dict[str, float]:
    """Send the whole workload at once (greedy, EOS ignored) and time it to the last token."""
    first_token: dict[str, float] = {}
    start = time.perf_counter()
    for i, (prompt, n) in enumerate(zip(workload.prompts, workload.output_lens)):
        params = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
        engine.add_request(f"bench-{i}", prompt, params)
    out_tokens = 0
    while engine.has_unfinished_requests():
        for output in engine.step():
            first_token.setdefault(output.request_id, time.perf_counter() - start)
            if output.finished:
                out_tokens += len(output.outputs[0].token_ids)
    elapsed = time.perf_counter() - start
    total = out_tokens + workload.num_prompt_tokens
    return {
        "requests": len(workload.prompts),
        "elapsed_s": elapsed,
        "requests_per_s": len(workload.prompts) / elapsed,
        "output_tokens": out_tokens,
        "output_tokens_per_s": out_tokens / elapsed,
        "total_tokens_per_s": total / elapsed,
        "mean_ttft_ms": 1000 * statistics.fmean(first_token.values()),
    }


def run_single(engine: EngineCore, prompt: list[int], output_len: int) -> dict[str, float]:
    """One request alone: time to first token and decode speed after it (TPOT)."""
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    start = time.perf_counter()
    engine.add_request("latency", prompt, params)
    stamps: list[float] = []
    while engine.has_unfinished_requests():
        if engine.step():
            stamps.append(time.perf_counter())
    ttft = stamps[0] - start
    decode_s = stamps[-1] - stamps[0]
    decode_tokens = len(stamps) - 1
    return {
        "prompt_tokens": len(prompt),
        "output_tokens": len(stamps),
        "ttft_ms": 1000 * ttft,
        "tpot_ms": 1000 * decode_s / max(decode_tokens, 1),
        "decode_tokens_per_s": decode_tokens / decode_s if decode_s > 0 else 0.0,
        "e2e_s": stamps[-1] - start,
    }
