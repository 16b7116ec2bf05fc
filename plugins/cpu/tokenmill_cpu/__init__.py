"""Hook implementations of the CPU reference plugin; the pieces live in sibling modules."""

from __future__ import annotations

from typing import Any

from tokenmill.hookspecs import hookimpl
from tokenmill.interfaces import AttentionSpec, OpOverrides, Platform
from tokenmill.ops import reference

from tokenmill_cpu import native_build
from tokenmill_cpu.allocator import CpuKVAllocator
from tokenmill_cpu.attention import CpuAttentionBackend
from tokenmill_cpu.communicator import GlooCommunicator
from tokenmill_cpu.fast_ops import fast_ops
from tokenmill_cpu.ipex import ipex_ops
from tokenmill_cpu.layer_ops import layer_ops
from tokenmill_cpu.linear_methods import linear_method
from tokenmill_cpu.platform import CpuPlatform, make_platform

PLATFORM_NAME = "cpu"


@hookimpl
def tokenmill_platform() -> CpuPlatform:
    """The host CPU platform."""
    return make_platform()


@hookimpl
def tokenmill_attention_backend(platform: Platform, spec: AttentionSpec) -> CpuAttentionBackend | None:
    """Paged attention (a native decode kernel, gather + SDPA), for the cpu platform only."""
    if platform.name != PLATFORM_NAME:
        return None
    native_build.start_builds()  # the model's first CPU hook: compile every kernel while it loads
    return CpuAttentionBackend(spec)


@hookimpl
def tokenmill_kv_allocator(platform: Platform, device_index: int) -> CpuKVAllocator | None:
    """The host-RAM KV pool allocator, for the cpu platform only (one host: device_index unused)."""
    return CpuKVAllocator() if platform.name == PLATFORM_NAME else None


@hookimpl
def tokenmill_communicator(platform: Platform, group: Any) -> GlooCommunicator | None:
    """gloo collectives over `group`, for the cpu platform only."""
    return GlooCommunicator(group) if platform.name == PLATFORM_NAME else None


@hookimpl
def tokenmill_op_overrides(platform: Platform) -> OpOverrides | None:
    """Native float32 norms, rotary and silu_and_mul over fewer-op torch ones, and IPEX's kernels
    over all of them when IPEX matches torch."""
    if platform.name != PLATFORM_NAME:
        return None
    torch_ops = {"silu_and_mul": reference.silu_and_mul, **fast_ops()}
    return OpOverrides({**torch_ops, **layer_ops(torch_ops), **ipex_ops()})


@hookimpl
def tokenmill_linear_method(platform: Platform, scheme: str) -> Any:
    """Weight-only int4/int8 matmuls (native block kernels, else torch's), for the cpu platform only."""
    return linear_method(scheme) if platform.name == PLATFORM_NAME else None
