"""Hook implementations of the TPU plugin on torch_xla (PJRT); the pieces live in sibling modules.

Importing this module does not import torch_xla: the platform probe imports it only when it is
installed, and the other hooks run only once tpu is chosen (contract 2).
"""

from __future__ import annotations

from typing import Any

from tokenmill.hookspecs import hookimpl
from tokenmill.interfaces import AttentionSpec, ShapeBuckets

from tokenmill_tpu.platform import TpuPlatform, make_platform


@hookimpl
def tokenmill_platform() -> TpuPlatform:
    """The TPU platform; is_available() explains what this machine lacks."""
    return make_platform()


@hookimpl
def tokenmill_shape_buckets(platform: Any, limits: dict[str, int]) -> ShapeBuckets:
    """x4 token and request buckets, x2 block-table widths."""
    from tokenmill_tpu.buckets import tpu_buckets

    return tpu_buckets(limits)


@hookimpl
def tokenmill_attention_backend(platform: Any, spec: AttentionSpec) -> Any:
    """torch_xla's ragged paged-attention kernel on a TPU; XLA gathers + SDPA elsewhere."""
    from tokenmill_tpu import xla_runtime
    from tokenmill_tpu.attention import TpuAttentionBackend

    return TpuAttentionBackend(spec, xla_runtime.device(), use_kernel=xla_runtime.on_tpu())


@hookimpl
def tokenmill_kv_allocator(platform: Any, device_index: int, memory_utilization: float) -> Any:
    """The XLA device's pool, sized from torch_xla's memory figures."""
    from tokenmill_tpu.allocator import TpuAllocator

    return TpuAllocator(memory_utilization)


@hookimpl
def tokenmill_communicator(platform: Any, group: Any) -> Any:
    """XLA collectives over the world group."""
    from tokenmill_tpu.communicator import XlaCommunicator

    return XlaCommunicator(group)


@hookimpl
def tokenmill_execution_context(platform: Any) -> Any:
    """no_grad and torch_xla.sync() once per step."""
    from tokenmill_tpu.execution import XlaExecution

    return XlaExecution()


@hookimpl
def tokenmill_step_runner(platform: Any, options: dict[str, Any]) -> Any:
    """The forward cut at the logits, every bucket compiled at start-up."""
    from tokenmill_tpu.step_runner import XlaStepRunner

    return XlaStepRunner(options)
