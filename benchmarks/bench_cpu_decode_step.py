"""Decode-step time of the default model with the CPU step runner against --enforce-eager, in one process.

Both engines run the same B requests (the workload's batch prompts, 100 prompt tokens each, greedy);
each runs alone in its own process (two models in one process would share the CPU caches, which
hold much of a 96 MB model on large-L3 hosts), in turns, twice; after warm-up steps the median
decode step is printed, with the ratio. One thread measures CPU time (time.thread_time, robust to
other load on the machine); more threads measure wall time. Print-only: speed goals live in
benchmarks, never in timed tests.
Run: python benchmarks/bench_cpu_decode_step.py [--rows 1 8] [--dtype auto] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from tokenmill import LLM, SamplingParams

WORKLOAD = Path(__file__).with_name("workload.json")
WARMUP, TIMED = 12, 15


def engine(rows: int, dtype: str, threads: int, eager: bool) -> object:
    """An engine core with `rows` requests added and their prefill and first decode steps run."""
    llm = LLM(dtype=dtype, enable_prefix_caching=False, num_threads=threads, enforce_eager=eager)
    tokenizer, core = llm.get_tokenizer(), llm.engine
    prompts = json.loads(WORKLOAD.read_text())["batch"]["prompts"]
    params = SamplingParams(temperature=0.0, max_tokens=WARMUP + TIMED + 8, ignore_eos=True)
    for i in range(rows):
        core.add_request(str(i), tokenizer.encode(prompts[i % len(prompts)])[:100], params)
    for _ in range(WARMUP):
        core.step()
    return core


def step_times(core: object, clock: object, count: int) -> list[float]:
    """Seconds of each of `count` engine steps by `clock`."""
    times = []
    for _ in range(count):
        start = clock()
        core.step()
        times.append(clock() - start)
    return times


def one(rows: int, dtype: str, threads: int, eager: bool) -> float:
    """Median decode-step seconds of one engine (this process)."""
    clock = time.thread_time if threads == 1 else time.perf_counter
    return statistics.median(step_times(engine(rows, dtype, threads, eager), clock, TIMED))


def measure(rows: int, dtype: str, threads: int) -> tuple[float, float]:
    """Best of two runs each, in turns, of (step runner, eager) in child processes."""
    best = {"runner": float("inf"), "eager": float("inf")}
    for _ in range(2):
        for name in best:
            command = [sys.executable, __file__, "--one", name, "--rows", str(rows), "--dtype", dtype,
                       "--threads", str(threads)]
            result = subprocess.run(command, check=True, capture_output=True, text=True)
            best[name] = min(best[name], float(result.stdout.split()[-1]))
    return best["runner"], best["eager"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", choices=["runner", "eager"], help="(internal) time one engine, print seconds")
    args = parser.parse_args()
    if args.one:
        print(one(args.rows[0], args.dtype, args.threads, args.one == "eager"))
        return
    what = "CPU time" if args.threads == 1 else "wall time"
    print(f"default model, dtype {args.dtype}, {args.threads} thread(s), {what} of a decode step (median)")
    for rows in args.rows:
        runner, eager = measure(rows, args.dtype, args.threads)
        print(f"  B={rows:3d}: step runner {runner * 1e3:7.2f} ms, --enforce-eager {eager * 1e3:7.2f} ms, "
              f"{eager / runner:4.2f}x ({rows / runner:6.1f} vs {rows / eager:6.1f} tok/s)", flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
