"""`tokenmill bench throughput|latency|serve`: benchmarks modelled on vLLM's scripts."""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

from tokenmill.cli.model_args import add_model_args
from tokenmill.config import EngineArgs

DEFAULT_WORKLOAD = os.path.join("benchmarks", "workload.json")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmark throughput, latency or a running server")
    kinds = parser.add_subparsers(dest="bench_kind", metavar="KIND", required=True)
    for name, help_text in (("throughput", "offline batch throughput"), ("latency", "single-stream latency")):
        sub = kinds.add_parser(name, help=help_text)
        add_model_args(sub)
        sub.add_argument("--workload", default=None, help=f"workload JSON (e.g. {DEFAULT_WORKLOAD}); "
                         "default: random prompts")
        sub.add_argument("--num-prompts", type=int, default=64 if name == "throughput" else 1,
                         help="random prompts to run")
        sub.add_argument("--input-len", type=int, default=128, help="tokens per random prompt")
        sub.add_argument("--output-len", type=int, default=None,
                         help="tokens to generate per prompt (default: 128 throughput, 256 latency)")
        sub.add_argument("--output-json", default=None, help="save the figures to this JSON file")
        EngineArgs.add_cli_args(sub)
        sub.set_defaults(run=run)
    if importlib.util.find_spec("tokenmill.cli.bench_serve") is not None:
        from tokenmill.cli import bench_serve

        bench_serve.add_parser(kinds)
        kinds.choices["serve"].set_defaults(run=bench_serve.run)


def run(args: argparse.Namespace) -> int:
    from tokenmill.bench.offline import run_batch, run_single
    from tokenmill.bench.report import report
    from tokenmill.llm import build_engine

    t0 = time.perf_counter()
    engine = build_engine(EngineArgs.from_cli_args(args))
    startup = time.perf_counter() - t0
    workload = _workload(args, engine)
    if args.bench_kind == "throughput":
        figures = run_batch(engine, workload)
    else:
        figures = run_single(engine, workload.prompts[0], workload.output_lens[0])
        figures["process_start_to_first_token_s"] = _since_process_start() - figures["e2e_s"] + figures["ttft_ms"] / 1000
    figures = {"engine_startup_s": startup, "platform": engine.platform.name,
               "dtype": str(engine.bundle.dtype).removeprefix("torch."), **figures}
    report(f"tokenmill bench {args.bench_kind}", figures, args.output_json)
    return 0


def _workload(args: argparse.Namespace, engine):
    from tokenmill.bench.workload import chat_workload, random_workload

    if args.workload:
        section = "batch" if args.bench_kind == "throughput" else "single"
        return chat_workload(args.workload, section, engine.tokenizer, args.output_len)
    output_len = args.output_len or (128 if args.bench_kind == "throughput" else 256)
    return random_workload(args.num_prompts, args.input_len, output_len, engine.bundle.arch.vocab_size)


def _since_process_start() -> float:
    """Seconds since this process started, from /proc (Linux); elsewhere since tokenmill was imported."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter()
