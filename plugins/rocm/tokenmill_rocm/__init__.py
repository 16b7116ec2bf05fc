"""Hook implementations of the ROCm plugin: tokenmill_triton's kernels with AMD tile choices, RCCL, HIP graphs.

Importing this module touches neither triton nor the GPU; the platform probe runs when
`tokenmill_platform` is first called, and the kernels load only once rocm is chosen (contract 2).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from tokenmill.hookspecs import hookimpl
from tokenmill.interfaces import AttentionSpec, OpOverrides

from tokenmill_rocm.platform import RocmPlatform, make_platform


@lru_cache(maxsize=1)
def _platform() -> RocmPlatform:
    return make_platform()


@hookimpl
def tokenmill_platform() -> RocmPlatform:
    """The ROCm platform; unavailable (with a reason) without a HIP build of torch and an AMD GPU."""
    return _platform()


@hookimpl
def tokenmill_attention_backend(platform: Any, spec: AttentionSpec) -> Any:
    """The shared Triton paged attention with the ROCm tiles (tiles.py)."""
    import torch

    from tokenmill_rocm.tiles import compute_units, rocm_tiles
    from tokenmill_triton.backend import TritonAttentionBackend

    device = torch.device("cuda", torch.cuda.current_device())
    return TritonAttentionBackend(spec, device, tiles=rocm_tiles(spec.head_size, compute_units(device)))


@hookimpl
def tokenmill_kv_allocator(platform: Any, device_index: int, memory_utilization: float) -> Any:
    """The HIP-memory allocator for `device_index`."""
    from tokenmill_rocm.allocator import RocmKVAllocator

    return RocmKVAllocator(device_index, memory_utilization)


@hookimpl
def tokenmill_communicator(platform: Any, group: Any) -> Any:
    """RCCL collectives (torch.distributed's nccl backend on ROCm)."""
    from tokenmill_rocm.communicator import RcclCommunicator

    return RcclCommunicator(group)


@hookimpl
def tokenmill_op_overrides(platform: Any) -> OpOverrides:
    """The shared Triton norms, rotary, silu_and_mul and top-k/top-p."""
    from tokenmill_triton.op_table import triton_ops

    return OpOverrides(triton_ops())


@hookimpl
def tokenmill_step_runner(platform: Any, options: dict[str, Any]) -> Any:
    """HIP graphs for decode batches where torch can capture them; None (eager) otherwise."""
    from tokenmill_rocm.graph_runner import HipGraphRunner, graphs_supported

    return HipGraphRunner(options) if graphs_supported() else None
