"""Records the linears of small decode graphs through the Triton GEMV instead of cuBLAS.

At batch 1 a decode step is a chain of matrix-vector products, which cuBLAS runs at 2.0-2.9 TB/s
on an H100 and the GEMV at 2.9-3.2 (benchmarks/cuda/bench_gemv.py). The mode below is active only
while such a graph is captured, so a replay pays nothing for it and the model stays plain torch:
nn.Linear calls F.linear, and this TorchFunctionMode sends the small-batch calls to the GEMV.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from tokenmill_triton.gemv import gemv
from tokenmill_triton.gemv_tuning import ShapeRecorder

MAX_ROWS = 1  # graphs of at most this many rows capture their linears as GEMVs
_DTYPES = (torch.bfloat16, torch.float16)


def fits(x: torch.Tensor, weight: torch.Tensor, max_rows: int) -> bool:
    """A 16-bit [M <= max_rows, K] input against a contiguous [N, K] weight of its dtype."""
    return (x.dim() == 2 and x.shape[0] <= max_rows and x.dtype in _DTYPES and weight.dtype == x.dtype
            and weight.dim() == 2 and weight.is_contiguous() and x.shape[1] == weight.shape[1])


class GemvCapture(TorchFunctionMode):
    """While active, F.linear on inputs of at most `max_rows` rows runs the Triton GEMV.

    With a `recorder` (gemv_tuning.ShapeRecorder), each such call's weight is also recorded, so
    that a warm-up step tells the tuner every shape and weight the graph will use.
    """

    def __init__(self, max_rows: int = MAX_ROWS, recorder: ShapeRecorder | None = None) -> None:
        super().__init__()
        self.max_rows = max_rows
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            if fits(x, weight, self.max_rows):
                if self.recorder is not None:
                    self.recorder.record(x, weight)
                return gemv(x, weight, args[2] if len(args) > 2 else kwargs.get("bias"))
        return func(*args, **kwargs)
