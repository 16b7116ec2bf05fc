"""The loop of a tensor-parallel worker (ranks 1..N-1): receive a step, run the model shard, repeat."""

from __future__ import annotations

import torch.distributed as dist

from tokenmill.config import EngineArgs
from tokenmill.engine.core import _startup_options  # the options the driver's engine passed its plugin
from tokenmill.parallel.rank_setup import RankSpec, RankState, init_rank, worker_threads
from tokenmill.parallel.step_broadcast import COPY, STOP, StepReceiver
from tokenmill.plugin_manager import load_plugins
from tokenmill.worker.model_runner import ModelRunner
from tokenmill.worker.runner_setup import build_runner


def start_worker(spec: RankSpec, ranks_on_host: int) -> RankState:
    """Everything a worker does before its loop: plugins, platform, then the shared rank start-up."""
    args = spec.args
    plugins = load_plugins()
    platform = plugins.select(args.device)
    worker_threads(args, platform, ranks_on_host)
    plugins.startup(platform, _startup_options(args))
    return init_rank(spec, plugins, platform)


def run_worker(state: RankState, args: EngineArgs) -> int:
    """Serve steps until the driver says stop; returns the number of steps run.

    Logits are computed (the output head's all-gather needs every rank) and dropped: sampling
    happens on the driver alone. The runner is built as the driver's (same padding, step runner
    options and any warm-up), and each step ends with the platform's sync, as the driver's does.
    """
    bundle = state.bundle
    runner = build_runner(ModelRunner, state.plugins, state.platform, args, bundle, state.pool,
                          state.execution)  # as the driver's
    receiver = StepReceiver(state.control, bundle.device)
    steps = 0
    while True:
        cmd, message = receiver.receive()
        if cmd == STOP:
            break
        with state.execution.guard():
            if cmd == COPY:
                state.allocator.copy_blocks(runner.kv_caches, message)
                continue
            runner.forward_batch(message.input_ids, message.positions, message.batch, message.logits_indices)
            state.execution.sync()
        steps += 1
    dist.destroy_process_group()
    return steps
