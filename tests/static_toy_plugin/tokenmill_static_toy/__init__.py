"""Hook implementations of the static_toy example plugin: static shapes, written for contract 2 (no guards)."""

from __future__ import annotations

from typing import Any

from tokenmill.hookspecs import hookimpl
from tokenmill.interfaces import AttentionSpec, ShapeBuckets
from tokenmill.plugin_base import TorchDistCommunicator

from tokenmill_static_toy.allocator import StaticToyAllocator
from tokenmill_static_toy.attention import StaticAttentionBackend
from tokenmill_static_toy.execution import CountingExecution, RecordingStepRunner
from tokenmill_static_toy.platform import StaticToyPlatform, buckets_for
from tokenmill_static_toy.recorder import RECORDER

__all__ = ["RECORDER"]


class GlooCommunicator(TorchDistCommunicator):
    """The shared communicator over gloo (list gathers, emulated reduce_scatter where needed)."""

    fused = False


@hookimpl
def tokenmill_platform() -> StaticToyPlatform:
    """The static_toy platform."""
    return StaticToyPlatform()


@hookimpl
def tokenmill_shape_buckets(platform: Any, limits: dict[str, int]) -> ShapeBuckets:
    """Buckets x4 apart up to the engine's limits."""
    return buckets_for(limits)


@hookimpl
def tokenmill_attention_backend(platform: Any, spec: AttentionSpec) -> StaticAttentionBackend:
    """Gather-based paged attention with a functional cache."""
    return StaticAttentionBackend(spec)


@hookimpl
def tokenmill_kv_allocator(platform: Any, device_index: int) -> StaticToyAllocator:
    """Host RAM."""
    return StaticToyAllocator()


@hookimpl
def tokenmill_communicator(platform: Any, group: Any) -> GlooCommunicator:
    """gloo collectives."""
    return GlooCommunicator(group)


@hookimpl
def tokenmill_execution_context(platform: Any) -> CountingExecution:
    """no_grad and a counted per-step sync."""
    return CountingExecution()


@hookimpl
def tokenmill_step_runner(platform: Any, options: dict[str, Any]) -> RecordingStepRunner:
    """Records each step's padded token count (and warms the buckets up when asked)."""
    return RecordingStepRunner(options)
