"""XLA compilations and tokens/s of the tpu plugin over the 64-prompt batch workload, against the cpu plugin.

Usage (in the torch-xla venv; see scripts/test.sh and docs/plugin-matrix.md):
    PJRT_DEVICE=CPU python benchmarks/tpu_xla_compiles.py [--max-new-tokens 128] [--prompts 64]
Runs the batch workload (chat prompts, greedy, EOS ignored) on --device tpu and then on --device
cpu, with the same engine options, in this one process. Prints the XLA compilations
(torch_xla.debug.metrics CompileTime samples) made at start-up (the warm-up over the buckets) and
while serving, the bucket shapes declared, the distinct step shapes used, and both devices'
output tokens/s with their ratio. On XLA's CPU device the figure shows the bucketing works
(a bounded set of compiled graphs), not TPU speed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from tokenmill.bench.offline import run_batch
from tokenmill.bench.workload import Workload, chat_workload
from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore

WORKLOAD = os.path.join(os.path.dirname(__file__), "workload.json")


def _engine(device: str, args: argparse.Namespace) -> EngineCore:
    return EngineCore(EngineArgs(model=args.model, device=device, dtype="float32", max_num_seqs=args.max_num_seqs,
                                 max_num_batched_tokens=args.max_num_batched_tokens, max_model_len=args.max_model_len,
                                 kv_cache_memory=1 << 30))


def _workload(engine: EngineCore, args: argparse.Namespace) -> Workload:
    work = chat_workload(WORKLOAD, "batch", engine.tokenizer, args.max_new_tokens)
    return Workload(work.prompts[: args.prompts], work.output_lens[: args.prompts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the workload's 128")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--max-num-batched-tokens", type=int, default=256)
    parser.add_argument("--max-model-len", type=int, default=512, help="the workload's prompts and outputs fit")
    args = parser.parse_args()
    from tokenmill_tpu import xla_runtime

    before = xla_runtime.compile_count()
    start = time.perf_counter()
    engine = _engine("tpu", args)
    startup_s, startup_compiles = time.perf_counter() - start, xla_runtime.compile_count() - before
    work = _workload(engine, args)
    before = xla_runtime.compile_count()
    tpu = run_batch(engine, work)
    serve_compiles = xla_runtime.compile_count() - before
    buckets = engine.runner.padding.buckets
    step = engine.runner._step
    del engine
    cpu = run_batch(_engine("cpu", args), work)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load average "
          f"{os.getloadavg()[0]:.1f}; PJRT_DEVICE={os.environ.get('PJRT_DEVICE', '')}")
    print(f"workload: {len(work.prompts)} prompts, {work.num_prompt_tokens} prompt tokens, "
          f"{tpu['output_tokens']} output tokens (greedy, EOS ignored)")
    print(f"buckets: tokens {buckets.token_counts}, batch {buckets.batch_sizes}, widths {buckets.block_table_widths}"
          f" -> at most {buckets.num_shapes()} (T, B, W) shapes")
    print(f"XLA compilations: {startup_compiles} at start-up ({getattr(step, 'warmup_compiles', 0)} in the bucket "
          f"warm-up, {startup_s:.1f} s), {serve_compiles} while serving the workload, of which "
          f"{getattr(step, 'forward_compiles', 0) - getattr(step, 'warmup_compiles', 0)} forward graphs (the rest: sampling)")
    print(f"tpu (XLA) output tokens/s: {tpu['output_tokens_per_s']:.1f} ({tpu['elapsed_s']:.1f} s)")
    print(f"cpu plugin output tokens/s: {cpu['output_tokens_per_s']:.1f} ({cpu['elapsed_s']:.1f} s)")
    print(f"ratio tpu/cpu: {tpu['output_tokens_per_s'] / cpu['output_tokens_per_s']:.3f}")


if __name__ == "__main__":
    main()
