"""Hook implementations of the CUDA plugin; the pieces live in sibling modules and tokenmill_triton.

Importing this module touches neither triton nor the GPU: the platform probe runs when
`tokenmill_platform` is first called, and kernels load only when the engine asks for them.
Contract 2: the hooks other than tokenmill_platform are called only once cuda is chosen.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from tokenmill.hookspecs import hookimpl
from tokenmill.interfaces import OpOverrides

from tokenmill_cuda.platform import CudaPlatform, make_platform

@lru_cache(maxsize=1)
def _platform() -> CudaPlatform:
    return make_platform()


@hookimpl
def tokenmill_platform() -> CudaPlatform:
    """The CUDA platform; unavailable (with a reason) when torch sees no NVIDIA GPU."""
    return _platform()


@hookimpl
def tokenmill_attention_backend(platform: Any, spec: Any) -> Any:
    """Triton paged attention on the current CUDA device."""
    import torch

    from tokenmill_triton.backend import TritonAttentionBackend

    return TritonAttentionBackend(spec, torch.device("cuda", torch.cuda.current_device()))


@hookimpl
def tokenmill_kv_allocator(platform: Any, device_index: int, memory_utilization: float) -> Any:
    """The profiling-based GPU allocator for `device_index`, filling `memory_utilization` of the card."""
    from tokenmill_cuda.allocator import CudaKVAllocator

    return CudaKVAllocator(device_index, memory_utilization)


@hookimpl
def tokenmill_communicator(platform: Any, group: Any) -> Any:
    """NCCL collectives over `group`."""
    from tokenmill_cuda.communicator import NcclCommunicator

    return NcclCommunicator(group)


@hookimpl
def tokenmill_op_overrides(platform: Any) -> OpOverrides | None:
    """Triton RMSNorm (plain and fused with the residual add), rotary, silu_and_mul; top-k/top-p."""
    from tokenmill_triton.op_table import triton_ops

    return OpOverrides(triton_ops())


@hookimpl
def tokenmill_execution_context(platform: Any) -> Any:
    """Inference mode, no per-step sync, and sampled ids read back via pinned memory and an event."""
    from tokenmill_cuda.execution import CudaExecution

    return CudaExecution()


@hookimpl
def tokenmill_step_runner(platform: Any, options: dict[str, Any]) -> Any:
    """CUDA graphs for decode batches; `enforce_eager` in options turns them off."""
    from tokenmill_cuda.graph_runner import CudaGraphRunner

    return CudaGraphRunner(options)


@hookimpl
def tokenmill_linear_method(platform: Any, scheme: str) -> Any:
    """GPTQ / AWQ int4 on the Triton kernels; fp8 through torch._scaled_mm on sm89+ (else None: those
    layers run dequantized). The GGUF schemes (int4, int8) stay dense on CUDA."""
    if scheme == "int4_groups":
        from tokenmill_triton.int4_linear import Int4GroupsMethod

        return Int4GroupsMethod()
    if scheme == "fp8":
        import torch

        from tokenmill_cuda.fp8_linear import Fp8Method

        capability = torch.cuda.get_device_capability()
        return Fp8Method(rowwise=capability >= (9, 0)) if capability >= (8, 9) else None
    return None
