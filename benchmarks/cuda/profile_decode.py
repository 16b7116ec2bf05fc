"""Where one single-stream decode step's time goes: host phases of the engine, GPU kernels, GPU idle.

Run: python benchmarks/cuda/profile_decode.py [--model-dir DIR] [--json out.json] [--variants ...].
Host phases are timed by wrapping the engine's methods with perf_counter (no extra syncs; the
sampler's `.tolist()` is the step's one sync, so "sample" includes waiting for the GPU). GPU time
comes from torch.profiler: the step boundary is the device-to-host copy of the sampled ids, and
the idle time is the gap from that copy to the next step's first kernel. Each of `--variants`
recaptures the graphs (cublas: library linears; gemv: Triton GEMVs at batch 1; gemv+pdl: and
programmatic dependent launch), so they are compared in one process on one card.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_e2e  # noqa: E402
import random_llama  # noqa: E402

PHASES = (("engine", "step"), ("scheduler", "schedule"), ("runner", "execute"), ("engine", "_sample"),
          ("scheduler", "mark_scheduled"), ("engine", "_read_tokens"), ("engine", "_process_samples"), ("engine", "_emit"),
          ("backend", "build_metadata"), ("runner", "_logits_step"), ("model", "compute_logits"))


def _owners(llm) -> dict:
    engine = llm.engine
    return {"engine": engine, "scheduler": engine.scheduler, "runner": engine.runner,
            "backend": engine.runner.attn_backend, "model": engine.runner.model}


def _wrap(totals: dict, label: str, fn):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start
    return timed


def host_phases(llm, prompt: list[int], steps: int) -> dict:
    """Mean microseconds per decode step of each wrapped phase: (run of 1 + steps) - (run of 1)."""
    totals: dict = defaultdict(float)
    owners = _owners(llm)
    saved = []
    for owner, name in PHASES:
        obj = owners[owner]
        if hasattr(obj, name):
            saved.append((obj, name, obj.__dict__.get(name)))
            setattr(obj, name, _wrap(totals, f"{owner}.{name}", getattr(obj, name)))
    runs = []
    for n in (1, 1 + steps):
        totals.clear()
        wall = bench_e2e._generate(llm, [prompt], n, temperature=0.0)
        runs.append((wall, dict(totals)))
    for obj, name, old in saved:
        if old is None:
            delattr(obj, name)
        else:
            setattr(obj, name, old)
    (w1, t1), (w2, t2) = runs
    result = {"token_ms": (w2 - w1) / steps * 1e3}
    result.update({k: (t2[k] - t1.get(k, 0.0)) / steps * 1e6 for k in t2})
    result["outside_engine_step_us"] = result["token_ms"] * 1e3 - result.get("engine.step", 0.0)
    return {k: round(v, 1) for k, v in result.items()}


def _gpu_events(prof) -> list:
    cuda = torch.autograd.DeviceType.CUDA
    events = [e for e in prof.events() if e.device_type == cuda]
    return sorted(events, key=lambda e: e.time_range.start)


def _split_steps(events: list) -> list[list]:
    """Group GPU events into steps that each end with the device-to-host copy of sampled ids."""
    steps, current = [], []
    for e in events:
        current.append(e)
        if "DtoH" in e.name or "Device -> Pageable" in e.name:
            steps.append(current)
            current = []
    return steps


def kernel_profile(llm, prompt: list[int], steps: int) -> dict:
    """Per decode step: GPU busy and idle microseconds, kernel count, and the costliest kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        bench_e2e._generate(llm, [prompt], 2 + steps, temperature=0.0)
    decode = _split_steps(_gpu_events(prof))[2:]  # drop the prefill and the first decode step
    busy, idle, count = [], [], []
    by_name: dict = defaultdict(float)
    for i, step in enumerate(decode):
        busy.append(sum(e.time_range.elapsed_us() for e in step))
        count.append(len(step))
        for e in step:
            by_name[e.name[:90]] += e.time_range.elapsed_us() / len(decode)
        if i + 1 < len(decode):
            idle.append(decode[i + 1][0].time_range.start - step[-1].time_range.end)
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:30]
    mean = lambda xs: round(sum(xs) / max(1, len(xs)), 1)  # noqa: E731
    return {"steps": len(decode), "gpu_busy_us": mean(busy), "gpu_idle_us": mean(idle), "events_per_step": mean(count),
            "top_kernels_us_per_step": [(name, round(us, 1)) for name, us in top]}


VARIANTS = {"cublas": (0, False), "gemv": (1, False), "gemv+pdl": (1, True)}  # (GEMV rows, PDL)


def recapture(llm, variant: str) -> None:
    """Drop the decode graphs and capture them again as `variant` (a key of VARIANTS)."""
    from tokenmill_triton import pdl

    step = llm.engine.runner._step
    step.gemv_rows, pdl.ENABLED = VARIANTS[variant][0], VARIANTS[variant][1] and pdl.supported()
    step.graphs.clear()
    step.pool = None
    step.capture_all(llm.engine.bundle.attn_backend.static_metadata(1, step.width), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="/tmp/llama3-8b-random")
    parser.add_argument("--json", default=None)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="capture as each of these in turn")
    args = parser.parse_args()
    folder = Path(args.model_dir)
    if not (folder / "config.json").exists():
        random_llama.write_model(folder, random_llama.LLAMA3_8B, device="cuda")
    llm, startup = bench_e2e.start_llm(folder)
    result = {"device": torch.cuda.get_device_name(), **startup}
    rng = torch.Generator().manual_seed(0)
    prompt = bench_e2e._tokens(rng, 1024, 128256)
    for variant in args.variants.split(","):
        recapture(llm, variant)
        bench_e2e._generate(llm, [prompt], 4, temperature=0.0)  # warm-up
        result[variant] = {"graph_replay_ms_b1": round(bench_e2e.graph_replay_ms(llm), 3),
                           "host": host_phases(llm, prompt, args.steps), "gpu": kernel_profile(llm, prompt, 16)}
        print(json.dumps({variant: result[variant]}), flush=True)
    print(json.dumps(result, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
