"""Programmatic dependent launch (Hopper and later): let a kernel start while its predecessor ends.

A batch-1 decode step is a chain of ~350 short kernels, and each one pays a launch gap while the
GPU drains the previous one. Launched with `launch_pdl`, a kernel's programs are scheduled as soon
as every program of the previous kernel has called `gdc_launch_dependents`; `gdc_wait` then holds
them until that kernel has finished and its writes are visible. Every kernel launched this way
must call `wait_for_previous` before it reads any activation or writes any output (weights, which
no kernel writes, may be read before). Off under the interpreter, on ROCm and before sm90.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from tokenmill_triton.paged_tile import interpreting


def supported() -> bool:
    """Whether this process can launch with PDL: a CUDA (not ROCm) GPU of compute capability >= 9."""
    if interpreting() or torch.version.hip is not None or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability()[0] >= 9


ENABLED: bool | None = None  # None: decided at the first launch; the benchmarks set False to compare


def launch_options() -> dict:
    """Keyword arguments for a launch of a kernel that takes USE_PDL (and calls wait_for_previous)."""
    global ENABLED
    if ENABLED is None:
        ENABLED = supported()
    return {"USE_PDL": True, "launch_pdl": True} if ENABLED else {"USE_PDL": False}


@triton.jit
def wait_for_previous(USE_PDL: tl.constexpr):
    """Block until the previous kernel is done (its writes visible), then let the next one launch."""
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
