"""HIP graphs for decode steps, through torch's graph API (torch.cuda.CUDAGraph is a HIP graph on ROCm).

The capture-and-replay logic is the CUDA plugin's CudaGraphRunner, which is written against
torch.cuda's graph API and tokenmill_triton's static metadata alone; the one AMD difference kept
here is that captured graphs keep the BLAS (hipBLASLt) linears instead of the Triton GEMVs tuned
for NVIDIA's batch-1 decode.
"""

from __future__ import annotations

from typing import Any, Callable


def graphs_supported() -> bool:
    """True when this torch build can capture graphs on the GPU (HIP graphs on ROCm)."""
    import torch

    return hasattr(torch.cuda, "CUDAGraph") and hasattr(torch.cuda, "graph") and torch.cuda.is_available()


class HipGraphRunner:
    """The StepRunner: the CUDA plugin's graph runner with the Triton GEMVs off."""

    def __init__(self, options: dict[str, Any]) -> None:
        from tokenmill_cuda.graph_runner import CudaGraphRunner

        self.inner = CudaGraphRunner(options)

    def wrap(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """The graph step (or `step` under enforce_eager), capturing with hipBLAS linears."""
        wrapped = self.inner.wrap(step)
        if hasattr(wrapped, "gemv_rows"):
            wrapped.gemv_rows = 0
        return wrapped
