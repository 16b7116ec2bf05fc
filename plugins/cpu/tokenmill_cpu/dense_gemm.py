"""The dense weight a packed layer's wide steps run on: oneDNN's prepacked bf16 GEMM, else F.linear.

Why prepack: torch's F.linear on a plain bf16 weight reorders it for oneDNN on every call. Packed
once at load (`mkldnn._reorder_linear_weight`, the format torch's own CPU compiler freezes
weights into) and run through `mkldnn._linear_pointwise`, SmolLM2's layer shapes plus its head
ran 2.2-2.4x faster at 17-64 rows and 1.5x at 256, and 0.96x at 1024 (one thread, CPU time, AMX
host; benchmarks/bench_cpu_linear.py's `dense` rows measure it on any host). The packed copy
replaces the plain weight, so it costs no memory, except for a tied head, whose embedding stays.
float32 weights stay on F.linear: packing them won only 1.1-1.3x and lost 10% at 1024 rows.
`gemm_dtype=torch.bfloat16` under a float32 weight (--dtype auto's mode for quantized models,
linear_methods.py) keeps the weight rounded to bf16 and prepacked, and rounds each float32 input
to bf16 for the GEMM only: oneDNN accumulates in float32 and the output is float32 again.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=1)
def prepacking_available() -> bool:
    """Whether this torch has oneDNN's linear ops and this CPU runs them in bf16."""
    ops = torch.ops.mkldnn
    try:
        return (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
                and hasattr(ops, "_reorder_linear_weight") and bool(ops._is_mkldnn_bf16_supported()))
    except (AttributeError, RuntimeError):
        return False


class DenseGemm:
    """x [T, K] -> x @ weight.T [T, N], with the weight [N, K] prepacked where that runs faster."""

    def __init__(self, weight: torch.Tensor, prepack: bool | None = None, gemm_dtype: torch.dtype | None = None) -> None:
        if gemm_dtype is not None and gemm_dtype != weight.dtype:
            weight = weight.to(gemm_dtype)  # [N, K]
        self.shape, self.dtype = weight.shape, weight.dtype
        if prepack is None:
            prepack = weight.dtype == torch.bfloat16 and prepacking_available()
        self.prepacked = prepack
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None) if prepack else weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.prepacked:
            return F.linear(x, self.weight)
        if x.dtype != self.dtype:  # the model's own dtype always matches; anything else is cast round it
            return self(x.to(self.dtype)).to(x.dtype)
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.weight, None, "none", [], "")

    def __repr__(self) -> str:
        kind = "oneDNN prepacked" if self.prepacked else "plain"
        return f"DenseGemm({tuple(self.shape)}, {str(self.dtype).removeprefix('torch.')}, {kind})"
