"""Hook implementations of the toy example plugin: a "toy" device that runs on the CPU plugin's pieces."""

from __future__ import annotations

from typing import Any

from tokenmill.hookspecs import hookimpl

from tokenmill_toy.delegate import cpu_reference
from tokenmill_toy.platform import PLATFORM_NAME, ToyPlatform


@hookimpl
def tokenmill_platform() -> ToyPlatform:
    """The toy platform: selected only with --device toy (priority 1 loses to every real device)."""
    return ToyPlatform()


@hookimpl
def tokenmill_attention_backend(platform: Any, spec: Any) -> Any:
    """The CPU plugin's attention backend, for the toy platform only."""
    if platform.name != PLATFORM_NAME:
        return None
    cpu, cpu_platform = cpu_reference()
    return cpu.tokenmill_attention_backend(platform=cpu_platform, spec=spec)


@hookimpl
def tokenmill_kv_allocator(platform: Any, device_index: int) -> Any:
    """The CPU plugin's KV allocator, for the toy platform only."""
    if platform.name != PLATFORM_NAME:
        return None
    cpu, cpu_platform = cpu_reference()
    return cpu.tokenmill_kv_allocator(platform=cpu_platform, device_index=device_index)


@hookimpl
def tokenmill_communicator(platform: Any, group: Any) -> Any:
    """The CPU plugin's gloo communicator, for the toy platform only."""
    if platform.name != PLATFORM_NAME:
        return None
    cpu, cpu_platform = cpu_reference()
    return cpu.tokenmill_communicator(platform=cpu_platform, group=group)
