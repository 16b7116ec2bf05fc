"""How many distinct step shapes a static-shape platform is handed over the 64-prompt batch workload.

Usage: python benchmarks/static_shapes.py [--device static_toy] [--max-new-tokens 128]
Runs the batch workload (64 chat prompts, greedy, EOS ignored) on a static-shape device and
prints the distinct (T, B, W) shapes its attention backend saw and the step runner's distinct
token counts, against the number its declared buckets allow. Needs tests/static_toy_plugin
installed for the default device. A compile-per-shape backend (XLA) compiles at most that many graphs.
"""

from __future__ import annotations

import argparse
import os

from tokenmill.bench.offline import run_batch
from tokenmill.bench.workload import chat_workload
from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore

WORKLOAD = os.path.join(os.path.dirname(__file__), "workload.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="static_toy")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the workload's 128")
    args = parser.parse_args()
    import tokenmill_static_toy as toy  # the recorder of the example device

    engine = EngineCore(EngineArgs(device=args.device, dtype="float32", kv_cache_memory=1 << 30))
    work = chat_workload(WORKLOAD, "batch", engine.tokenizer, args.max_new_tokens)
    toy.RECORDER.reset()
    figures = run_batch(engine, work)
    buckets = engine.runner.padding.buckets
    shapes = sorted(toy.RECORDER.batch_shapes)
    print(f"workload: {len(work.prompts)} prompts, {work.num_prompt_tokens} prompt tokens, "
          f"{figures['output_tokens']} output tokens, {toy.RECORDER.steps} steps, {toy.RECORDER.syncs} syncs")
    print(f"declared buckets: tokens {buckets.token_counts}, batch {buckets.batch_sizes}, "
          f"widths {buckets.block_table_widths} -> at most {buckets.num_shapes()} (T, B, W) shapes")
    print(f"distinct (T, B, W) shapes handed to the backend: {len(shapes)}: {shapes}")
    print(f"distinct step-runner token counts: {len(toy.RECORDER.step_tokens)}: {sorted(toy.RECORDER.step_tokens)}")


if __name__ == "__main__":
    main()
