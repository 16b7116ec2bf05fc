"""Executors: start the tensor-parallel workers (spawned processes or Ray actors) and drive them."""

from __future__ import annotations

from typing import Any

from tokenmill.config import EngineArgs
from tokenmill.parallel.executor.driver import TPExecutor


def start_executor(args: EngineArgs, plugins: Any, platform: Any) -> TPExecutor:
    """Start args.tensor_parallel_size ranks on args.distributed_executor_backend; this process is rank 0."""
    if args.distributed_executor_backend == "ray":
        from tokenmill.parallel.executor.ray_launcher import RayLauncher

        launcher = RayLauncher(args.tensor_parallel_size, platform.device_type)
    else:
        from tokenmill.parallel.executor.mp_launcher import MpLauncher

        launcher = MpLauncher()
    executor = TPExecutor(args, plugins, platform, launcher)
    executor.start()
    return executor
