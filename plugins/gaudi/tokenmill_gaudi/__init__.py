"""Hook implementations of the Intel Gaudi plugin; the pieces live in sibling modules.

On a Gaudi they use habana_frameworks.torch (the HPU device, mark_step once per step, HPU graphs
through the step runner, HCCL); with TOKENMILL_GAUDI_STUBS=1 the same logic runs on the stubs in
`tokenmill_gaudi.stubs`. Importing this module imports neither. Contract 2: the hooks other than
tokenmill_platform are called only once gaudi is chosen.
"""

from __future__ import annotations

from typing import Any

from tokenmill.hookspecs import hookimpl
from tokenmill.interfaces import AttentionSpec, ShapeBuckets

from tokenmill_gaudi.platform import GaudiPlatform, make_platform


@hookimpl
def tokenmill_platform() -> GaudiPlatform:
    """The Gaudi platform (or its stubs); is_available() explains what this machine lacks."""
    return make_platform()


@hookimpl
def tokenmill_shape_buckets(platform: Any, limits: dict[str, int]) -> ShapeBuckets:
    """Exponential-then-linear buckets up to the engine's limits."""
    from tokenmill_gaudi.buckets import gaudi_buckets

    return gaudi_buckets(limits)


@hookimpl
def tokenmill_attention_backend(platform: Any, spec: AttentionSpec) -> Any:
    """Gather + SDPA paged attention on the HPU."""
    from tokenmill_gaudi.attention import GaudiAttentionBackend
    from tokenmill_gaudi.runtime import runtime

    return GaudiAttentionBackend(spec, runtime().device())


@hookimpl
def tokenmill_kv_allocator(platform: Any, device_index: int, memory_utilization: float) -> Any:
    """The HPU allocator for `device_index`, sized from the card's memory statistics."""
    from tokenmill_gaudi.allocator import GaudiAllocator

    return GaudiAllocator(device_index, memory_utilization)


@hookimpl
def tokenmill_communicator(platform: Any, group: Any) -> Any:
    """HCCL collectives over `group` (gloo on the stubs)."""
    from tokenmill_gaudi.communicator import GaudiCommunicator

    return GaudiCommunicator(group)


@hookimpl
def tokenmill_execution_context(platform: Any) -> Any:
    """no_grad and one mark_step per step."""
    from tokenmill_gaudi.execution import GaudiExecution

    return GaudiExecution()


@hookimpl
def tokenmill_step_runner(platform: Any, options: dict[str, Any]) -> Any:
    """HPU graphs per bucketed step shape; enforce_eager turns them off."""
    from tokenmill_gaudi.graph_runner import HpuGraphRunner

    return HpuGraphRunner(options)
