"""Brings one tensor-parallel rank up: process groups, its shard of the model, and its KV pool.

The driver (rank 0, inside the engine) and every worker run the same `init_rank`, so their
collectives line up one for one: the model load, the profile step and the pool-size agreement.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from tokenmill.config import EngineArgs
from tokenmill.engine.kv_setup import KVPool, allocate_pool, bytes_per_block
from tokenmill.engine.profile_run import profile_peak_activations
from tokenmill.errors import TokenmillError
from tokenmill.interfaces import AttentionSpec
from tokenmill.loaders import ModelBundle, load_model_bundle
from tokenmill.parallel.tp_plan import TPPlan
from tokenmill.parallel.tp_transform import shard_model, wire_collectives
from tokenmill.plugin_base import DefaultExecution, TorchDistCommunicator

ENV_COLLECTIVE_TIMEOUT = "TOKENMILL_COLLECTIVE_TIMEOUT_S"
DEFAULT_COLLECTIVE_TIMEOUT_S = 120.0
_IDLE_TIMEOUT = timedelta(days=3650)  # the control group waits for the next step as long as the engine idles


@dataclass(slots=True)
class RankSpec:
    """What one rank needs to start (plain values: it travels to a spawned process or a Ray actor)."""

    args: EngineArgs
    rank: int
    world_size: int
    local_rank: int  # the device index on its host
    init_address: str  # tcp://host:port of rank 0's rendezvous
    collective_timeout_s: float
    log_level: int = logging.WARNING  # the engine process's root level: workers log as it does


@dataclass(slots=True)
class RankState:
    """A rank after start-up: its model shard, KV pool and the communicators it steps with."""

    plugins: Any
    platform: Any
    execution: Any
    bundle: ModelBundle
    pool: KVPool
    allocator: Any
    comm: Any  # the platform's communicator over the tensor-parallel group (the model's collectives)
    control: Any  # a host-side communicator over the world group (the driver's step broadcast)


def collective_timeout_s() -> float:
    """Seconds a model collective may wait for a peer before the engine calls it failed."""
    raw = os.environ.get(ENV_COLLECTIVE_TIMEOUT)
    try:
        value = float(raw) if raw else DEFAULT_COLLECTIVE_TIMEOUT_S
    except ValueError:
        raise TokenmillError(f"${ENV_COLLECTIVE_TIMEOUT}={raw!r} is not a number of seconds, e.g. 120") from None
    if value <= 0:
        raise TokenmillError(f"${ENV_COLLECTIVE_TIMEOUT} must be positive, got {value}")
    return value


def worker_threads(args: EngineArgs, platform: Any, ranks_on_host: int) -> None:
    """Split a CPU host's cores between its ranks (each would otherwise take them all)."""
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    elif platform.device_type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks_on_host))


def init_rank(spec: RankSpec, plugins: Any, platform: Any) -> RankState:
    """Join the process groups, load this rank's shard and allocate its pool (every rank at once)."""
    require_dist_backend(platform)
    _select_device(platform, spec.local_rank)
    dist.init_process_group("gloo", init_method=spec.init_address, rank=spec.rank, world_size=spec.world_size,
                            timeout=_IDLE_TIMEOUT)
    tp_group = dist.new_group(list(range(spec.world_size)), backend=platform.dist_backend,
                              timeout=timedelta(seconds=spec.collective_timeout_s))
    comm = plugins.communicator(platform, tp_group)
    control = plugins.communicator(platform, None) if platform.dist_backend == "gloo" else _host_comm()
    execution = plugins.execution_context(platform) or DefaultExecution()
    bundle = _load_shard(spec, plugins, platform, comm)
    allocator = plugins.kv_allocator(platform, spec.local_rank, spec.args.gpu_memory_utilization)
    pool = _agreed_pool(spec.args, allocator, bundle, control, execution, reserved=int(platform.static_shapes))
    return RankState(plugins, platform, execution, bundle, pool, allocator, comm, control)


# torch.distributed backends that must be the default (world) process group, which here is gloo:
# it carries the driver's step broadcast on every platform. torch_xla's backend refuses otherwise.
_DEFAULT_GROUP_ONLY = {"xla": "torch_xla's 'xla' backend works only as the default process group"}


def require_dist_backend(platform: Any) -> None:
    """Refuse a platform whose torch.distributed backend this engine cannot use, naming the problem and the fix."""
    backend = platform.dist_backend
    if backend in _DEFAULT_GROUP_ONLY:
        raise TokenmillError(
            f"tensor parallelism on {platform.name} is not built: {_DEFAULT_GROUP_ONLY[backend]}, and the engine's "
            "default group is gloo (it carries each step to the workers); use --tensor-parallel-size 1 there")
    if not dist.is_available() or not dist.is_backend_available(backend):
        raise TokenmillError(
            f"tensor parallelism on {platform.name} needs the torch.distributed backend {backend!r}, which is not "
            f"registered in this process; install the platform's distributed support (the package that registers "
            f"{backend!r} with torch.distributed) or use --tensor-parallel-size 1")


def _select_device(platform: Any, local_rank: int) -> None:
    """Make `local_rank` the current device of an accelerator platform (the CPU has one)."""
    accel = getattr(torch, "accelerator", None)
    if platform.device_type != "cpu" and accel is not None and accel.is_available():
        accel.set_device_index(local_rank)


def _host_comm() -> TorchDistCommunicator:
    comm = TorchDistCommunicator(None)
    comm.fused = False  # the world group is gloo: list all_gather
    return comm


def _load_shard(spec: RankSpec, plugins: Any, platform: Any, comm: Any) -> ModelBundle:
    args = spec.args
    plans: list[TPPlan] = []  # the plan shard() made, for wiring once the loader has packed

    def shard(net: torch.nn.Module, full: AttentionSpec) -> tuple[Any, AttentionSpec]:
        arch = net.arch
        plan = TPPlan.build(spec.rank, spec.world_size, num_heads=arch.num_heads, num_kv_heads=arch.num_kv_heads,
                            vocab_size=arch.vocab_size, intermediate_size=arch.intermediate_size)
        local = AttentionSpec(plan.local_heads, plan.local_kv_heads, full.head_size, full.block_size, full.dtype,
                              full.kv_cache_dtype)
        backend = plugins.attention_backend(platform, local)
        shard_model(net, plan, backend)
        plans.append(plan)
        return backend, local

    bundle = load_model_bundle(args.model, platform=platform, plugins=plugins, dtype=args.dtype,
                               block_size=args.block_size, max_model_len=args.max_model_len,
                               quantization=args.quantization, kv_cache_dtype=args.kv_cache_dtype,
                               tokenizer=args.tokenizer, revision=args.revision, chat_template=args.chat_template,
                               shard=shard)
    wire_collectives(bundle.model, plans[0], comm)
    return bundle


def _agreed_pool(args: EngineArgs, allocator: Any, bundle: ModelBundle, control: Any, execution: Any,
                 reserved: int) -> KVPool:
    """Every rank's pool gets the blocks the smallest budget holds (the scheduler runs one block table).

    The counts meet on the host-side control group, whose wait has no short timeout: ranks that
    load the model at different speeds are no failure. `reserved` blocks (a static-shape
    platform's null block) come out of that agreed count on every rank alike, so each pool has the
    same usable blocks and its null block at the same index, the one after them.
    """
    with execution.guard():
        profile_peak_activations(allocator, bundle, args.max_num_batched_tokens, args.max_num_seqs, args.block_size)
    try:
        budget = allocator.available_kv_bytes(args.kv_cache_memory)
    except ValueError as exc:
        raise TokenmillError(f"KV cache memory: {exc}") from None
    per_block = bytes_per_block(bundle.attn_backend, bundle.arch.num_layers, bundle.attn_spec.kv_cache_dtype)
    mine = torch.tensor([budget // per_block], dtype=torch.int64)
    fewest = int(control.all_gather(mine).min())
    return allocate_pool(allocator, bundle.attn_backend, num_layers=bundle.arch.num_layers,
                         dtype=bundle.attn_spec.kv_cache_dtype, block_size=args.block_size,
                         requested_bytes=max(fewest, 1) * per_block, max_model_len=bundle.max_model_len,
                         max_len_was_set=args.max_model_len is not None, reserved_blocks=reserved)
