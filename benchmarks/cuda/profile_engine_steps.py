"""Where the 500-request run's wall time goes, per engine phase, on one GPU (host vs device).

Wraps the engine's phases with host timers (schedule, build inputs, launch, sample, the read-back
that waits for the device, update, emit) and brackets each forward with CUDA events, then runs bench_e2e's
500-request workload once. Prints per-step milliseconds of each phase and the share of the wall
time the device spent in forwards: the host time the issue's async scheduling could hide.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
import bench_e2e  # noqa: E402
from bench_engine_overhead import PhaseTimer  # noqa: E402


def instrument(engine, timer: PhaseTimer) -> list[tuple[torch.cuda.Event, torch.cuda.Event]]:
    import tokenmill.worker.model_runner as model_runner

    timer.wrap(engine.scheduler, "schedule", "schedule")
    timer.wrap(engine.scheduler, "mark_scheduled", "update")
    timer.wrap(engine, "_process_samples", "process_samples")
    timer.wrap(engine, "_emit", "emit")
    timer.wrap(engine, "_sample", "sample")
    timer.wrap(engine, "_read_tokens", "read back (waits for the device)")
    timer.wrap(model_runner, "build_step_inputs", "build_inputs")
    timer.wrap(engine.runner, "forward_batch", "launch")
    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    runner = engine.runner
    forward = runner.forward_batch

    def bracketed(*args, **kwargs):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        out = forward(*args, **kwargs)
        end.record()
        events.append((begin, end))
        return out

    runner.forward_batch = bracketed
    timer.wrap(engine, "step", "step")
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="/tmp/llama3-8b-random")
    parser.add_argument("--json", default=None)
    parser.add_argument("--max-num-seqs", type=int, default=None)
    parser.add_argument("--max-num-batched-tokens", type=int, default=None)
    args = parser.parse_args()
    folder = Path(args.model_dir)
    if not (folder / "config.json").exists():
        bench_e2e.random_llama.write_model(folder, bench_e2e.random_llama.LLAMA3_8B, device="cuda")
    llm, _ = bench_e2e.start_llm(folder, max_num_seqs=args.max_num_seqs,
                                 max_num_batched_tokens=args.max_num_batched_tokens)
    rng = torch.Generator().manual_seed(0)
    bench_e2e._generate(llm, [bench_e2e._tokens(rng, 64, 128256) for _ in range(8)], 8, temperature=0.0)
    bench_e2e.bench_throughput(llm, rng, 0.0)  # warm: every batch size met once
    timer = PhaseTimer()
    timer.clock = time.perf_counter  # wall time: the device sync inside sampling is part of the story
    events = instrument(llm.engine, timer)
    steps_before = llm.engine.stats().num_steps
    wall = bench_e2e.bench_throughput(llm, rng, 0.0)["throughput_s"]
    torch.cuda.synchronize()
    device_s = sum(b.elapsed_time(e) for b, e in events) / 1e3
    steps = llm.engine.stats().num_steps - steps_before
    result = {"device": torch.cuda.get_device_name(), "max_num_seqs": llm.engine.args.max_num_seqs,
              "max_num_batched_tokens": llm.engine.args.max_num_batched_tokens, "wall_s": wall, "req_s": 500 / wall, "steps": steps,
              "forward_device_s": device_s, "device_busy_share": device_s / wall,
              "per_step_ms": {k: 1e3 * v / max(steps, 1) for k, v in sorted(timer.current.items())}}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    import os

    os._exit(0)


if __name__ == "__main__":
    main()
