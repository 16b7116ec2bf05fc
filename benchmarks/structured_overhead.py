"""Per-step overhead of structured outputs on the CPU: decode steps with a JSON schema against no grammar.

For batch 1 and 64 it runs the default model (SmolLM2-135M) on the CPU twice in the same process:
every request free (greedy, ignore_eos), then every request constrained by a JSON schema whose
required string cannot close within the run, so both runs decode the same number of full-batch
steps. It prints the median time of a full-batch decode step in each run, and their ratio; then,
for the constrained run, the share of the step that the grammar took (mask fill + apply, token
accept), timed around those calls. Also the schema's first compile and a cached lookup.

Run: python benchmarks/structured_overhead.py [--steps 24] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.sampling.params import SamplingParams
from tokenmill.structured import StructuredOutputsParams
from tokenmill.structured.matcher import GrammarState
from tokenmill.structured.token_mask import BatchMask

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "minLength": 400},
    "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "age", "tags"]}
PROMPT = "Write a JSON record about a person named Ada who lives in London."


class _Timed:
    """Wraps a bound method, adding the seconds spent in it to a shared counter."""

    def __init__(self, fn, total: list[float]) -> None:
        self.fn, self.total = fn, total

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total[0] += time.perf_counter() - start


def _decode_steps(core: EngineCore, batch: int, steps: int, spec: StructuredOutputsParams | None) -> list[float]:
    """Seconds of each decode step in which every one of `batch` requests samples."""
    params = SamplingParams(temperature=0.0, max_tokens=steps + 2, ignore_eos=True, structured_outputs=spec)
    for i in range(batch):
        core.add_request(f"{'g' if spec else 'f'}{batch}-{i}", PROMPT, params)
    times = []
    while core.has_unfinished_requests():
        start = time.perf_counter()
        core.step()
        elapsed = time.perf_counter() - start
        running = core.scheduler.num_running
        if running == batch and all(len(s.request.output_token_ids) >= 1 for _, s in core._samples.values()):
            times.append(elapsed)
    return times[1:steps + 1]  # skip the first decode step (warm-up of the batch's shapes)


def _grammar_seconds(core: EngineCore, batch: int, steps: int, spec: StructuredOutputsParams) -> tuple[float, float]:
    """(median step seconds, grammar seconds per step) of a constrained run, timing mask and accept."""
    total = [0.0]
    mask = core.sampler._mask
    mask.apply = _Timed(mask.apply, total)
    original_accept = GrammarState.accept

    def timed_accept(self, token_id):
        start = time.perf_counter()
        try:
            return original_accept(self, token_id)
        finally:
            total[0] += time.perf_counter() - start

    GrammarState.accept = timed_accept
    try:
        start_count = core._counters["steps"]
        times = _decode_steps(core, batch, steps, spec)
        step_count = core._counters["steps"] - start_count
    finally:
        GrammarState.accept = original_accept
        del mask.apply
    return statistics.median(times), total[0] / max(step_count, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24, help="full-batch decode steps measured per run")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    core = EngineCore(EngineArgs(device="cpu", dtype="float32", max_model_len=1024, max_num_seqs=64,
                                 kv_cache_memory=512 * 2**20, num_threads=args.threads))
    spec = StructuredOutputsParams(json=SCHEMA)
    start = time.perf_counter()
    core.grammar_compiler().compile(spec)
    first = time.perf_counter() - start
    start = time.perf_counter()
    core.grammar_compiler().compile(spec)
    cached = time.perf_counter() - start
    print(f"CPU threads {torch.get_num_threads()}; schema compile: first {first * 1e3:.1f} ms (with the "
          f"tokenizer's vocabulary scan), cached {cached * 1e6:.0f} us")
    print("batch | free step ms | json-schema step ms | ratio | grammar ms/step (share of step)")
    for batch in (1, 64):
        _decode_steps(core, batch, 4, None)  # warm-up
        free = statistics.median(_decode_steps(core, batch, args.steps, None))
        constrained, grammar = _grammar_seconds(core, batch, args.steps, spec)
        print(f"{batch:5d} | {free * 1e3:12.2f} | {constrained * 1e3:19.2f} | {constrained / free:5.3f} | "
              f"{grammar * 1e3:.3f} ({grammar / constrained:.1%})")


if __name__ == "__main__":
    main()
