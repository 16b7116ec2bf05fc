"""What every rank builds its ModelRunner with: the static platform's padding and the plugin's step runner.

The engine (one device, or rank 0 of tensor parallelism) and each tensor-parallel worker call
`build_runner` alike, so every rank's step runner gets the same options and buckets. A step
runner that compiles or captures its buckets when it wraps the step (the TPU plugin's warm-up)
then runs the same dummy steps in the same order on every rank, and their collectives meet one
for one, as the profile step's do in parallel.rank_setup.
"""

from __future__ import annotations

from typing import Any, Callable

from tokenmill.config import EngineArgs
from tokenmill.worker.model_runner import ModelRunner
from tokenmill.worker.padding import StepPadding, check_covers, default_buckets


def step_padding(plugins: Any, platform: Any, args: EngineArgs, max_model_len: int,
                 num_blocks: int) -> StepPadding | None:
    """The static platform's buckets (or the core's default), checked against the engine's limits; None when eager.

    `num_blocks` are the blocks requests may use: the pool's next block, which allocate_pool
    reserved (reserved_blocks=1), is the null block padding points at.
    """
    if not platform.static_shapes:
        return None
    limits = {"max_num_batched_tokens": args.max_num_batched_tokens, "max_num_seqs": args.max_num_seqs,
              "max_blocks_per_seq": -(-max_model_len // args.block_size)}
    buckets = plugins.shape_buckets(platform, limits) or default_buckets(limits)
    check_covers(buckets, limits, platform.name)
    return StepPadding(buckets, args.block_size, null_block=num_blocks)


def step_runner_options(args: EngineArgs, max_model_len: int, padding: StepPadding | None,
                        api_server_process: bool = False) -> dict[str, Any]:
    """What tokenmill_step_runner is told (interfaces: plain values and the ShapeBuckets)."""
    return {"enforce_eager": args.enforce_eager, "max_num_seqs": args.max_num_seqs, "max_model_len": max_model_len,
            "block_size": args.block_size, "buckets": padding.buckets if padding else None,
            "api_server_process": api_server_process}


def build_runner(runner_class: Callable[..., ModelRunner], plugins: Any, platform: Any, args: EngineArgs,
                 bundle: Any, pool: Any, execution: Any, api_server_process: bool = False) -> ModelRunner:
    """A runner over `bundle`'s model and `pool` (engine.kv_setup.KVPool), padded, wrapped and warmed up
    (ModelRunner.warm_up, under the platform's `execution` context) as the platform asks;
    `api_server_process`: this engine serves an API server process on the same host (the engine-core process)."""
    padding = step_padding(plugins, platform, args, pool.max_model_len, pool.num_blocks)
    options = step_runner_options(args, pool.max_model_len, padding, api_server_process)
    step_runner = None if args.enforce_eager else plugins.step_runner(platform, options)
    runner = runner_class(bundle.model, bundle.attn_backend, pool.kv_caches, args.block_size, bundle.device,
                          step_runner, padding)
    runner.warm_up(execution)
    return runner
