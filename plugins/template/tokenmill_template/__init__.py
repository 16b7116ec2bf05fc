"""Hook implementations of the template backend; each piece lives in a sibling module.

The core asks `tokenmill_platform` of every installed plugin, and every other hook only of the
plugin whose platform it chose (contract 2), so no hook here checks `platform.name`. The four
hooks below are required; docs/backends.md lists the optional ones and the core's defaults.
"""

from __future__ import annotations

from typing import Any

from tokenmill.hookspecs import hookimpl
from tokenmill.interfaces import AttentionSpec, OpOverrides, Platform

from tokenmill_template.allocator import TemplateAllocator
from tokenmill_template.attention import TemplateAttentionBackend
from tokenmill_template.communicator import TemplateCommunicator
from tokenmill_template.ops import silu_and_mul
from tokenmill_template.platform import TemplatePlatform


@hookimpl
def tokenmill_platform() -> TemplatePlatform:
    """Describe the device; cheap, and never raises when the hardware is missing."""
    return TemplatePlatform()


@hookimpl
def tokenmill_attention_backend(platform: Platform, spec: AttentionSpec) -> TemplateAttentionBackend:
    """The paged-attention backend for one model's attention shape."""
    return TemplateAttentionBackend(spec)


@hookimpl
def tokenmill_kv_allocator(platform: Platform, device_index: int, memory_utilization: float) -> TemplateAllocator:
    """The KV pool's memory on device `device_index`, filling at most `memory_utilization` of it."""
    return TemplateAllocator(device_index, memory_utilization)


@hookimpl
def tokenmill_communicator(platform: Platform, group: Any) -> TemplateCommunicator:
    """Collectives over a torch.distributed group made with platform.dist_backend."""
    return TemplateCommunicator(group)


@hookimpl
def tokenmill_op_overrides(platform: Platform) -> OpOverrides:
    """Faster versions of named ops (optional); here one example, checked by the kit like any other."""
    return OpOverrides({"silu_and_mul": silu_and_mul})
