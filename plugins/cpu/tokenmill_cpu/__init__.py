"""Hook implementations of the CPU reference plugin; the pieces live in sibling modules.

Contract 2: the core calls these hooks only once the cpu platform is chosen, so none of them
checks `platform.name`.
"""

from __future__ import annotations

from typing import Any

from tokenmill.hookspecs import hookimpl
from tokenmill.interfaces import AttentionSpec, OpOverrides, Platform
from tokenmill.ops import reference

from tokenmill_cpu import native_build
from tokenmill_cpu.allocator import CpuKVAllocator
from tokenmill_cpu.argmax import argmax_rows
from tokenmill_cpu.attention import CpuAttentionBackend
from tokenmill_cpu.communicator import GlooCommunicator
from tokenmill_cpu.fast_ops import fast_ops
from tokenmill_cpu.ipex import ipex_ops
from tokenmill_cpu.layer_ops import layer_ops
from tokenmill_cpu.linear_methods import linear_method
from tokenmill_cpu.moe import moe_ops
from tokenmill_cpu.platform import CpuPlatform, make_platform
from tokenmill_cpu.step_runner import CpuStepRunner, cpu_step_runner


@hookimpl
def tokenmill_platform() -> CpuPlatform:
    """The host CPU platform."""
    return make_platform()


@hookimpl
def tokenmill_startup(platform: Platform, options: dict[str, Any]) -> None:
    """Compile every native kernel in the background while the model loads."""
    native_build.start_builds()


@hookimpl
def tokenmill_attention_backend(platform: Platform, spec: AttentionSpec) -> CpuAttentionBackend:
    """Paged attention: a native decode kernel, gather + SDPA."""
    return CpuAttentionBackend(spec)


@hookimpl
def tokenmill_kv_allocator(platform: Platform, device_index: int) -> CpuKVAllocator:
    """The host-RAM KV pool allocator (one host: device_index and memory_utilization unused)."""
    return CpuKVAllocator()


@hookimpl
def tokenmill_communicator(platform: Platform, group: Any) -> GlooCommunicator:
    """gloo collectives over `group`."""
    return GlooCommunicator(group)


@hookimpl
def tokenmill_op_overrides(platform: Platform) -> OpOverrides:
    """Native float32 norms, rotary and silu_and_mul over fewer-op torch ones, IPEX's kernels over all
    of them when IPEX matches torch, a blocked argmax and a grouped-GEMM fused_moe."""
    torch_ops = {"silu_and_mul": reference.silu_and_mul, **fast_ops()}
    table = {**torch_ops, **layer_ops(torch_ops), **ipex_ops(), "argmax": argmax_rows}
    return OpOverrides({**table, **moe_ops(table)})


@hookimpl
def tokenmill_step_runner(platform: Platform, options: dict[str, Any]) -> CpuStepRunner | None:
    """Narrow pure-decode steps of Llama-family models on packed blocks in one native call (step_runner.py);
    beside an API server process they leave it one core (see step_runner.py)."""
    return cpu_step_runner(reserve_core=bool(options.get("api_server_process")))


@hookimpl
def tokenmill_linear_method(platform: Platform, scheme: str) -> Any:
    """Weight-only int4/int8 matmuls, and GPTQ/AWQ int4 from their own codes (native block kernels, else
    torch's); no fp8 kernels: FP8 checkpoints run dequantized to the model dtype."""
    return linear_method(scheme)
