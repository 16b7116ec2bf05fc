"""The kit's tolerance tables: how far a plugin's results may be from the core's references, per dtype.

Every table is {dtype: {"atol": ..., "rtol": ...}} for torch.testing.assert_close, except
LINEAR, which bounds the largest error relative to the largest output (a GEMM's error scales
with the output, not with each element). docs/backends.md repeats these tables.
"""

from __future__ import annotations

import torch

# Attention output vs the float64 dense reference: float32 allows for a blocked kernel's reduction
# order; the half types for rounding q/k/v products and probabilities to 8 (bfloat16) or 11
# (float16) mantissa bits.
ATTENTION = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.bfloat16: {"atol": 3e-2, "rtol": 3e-2},
    torch.float16: {"atol": 4e-3, "rtol": 4e-3},
}

# Elementwise ops (rms_norm, fused_add_rms_norm, rotary, silu_and_mul) vs ops.reference in the same
# dtype, on inputs of order 1: float32 allows a different reduction order and fast rsqrt/exp; the
# half types a few units in the last place (an override may round once where the reference
# rounds twice, or the other way round).
ELEMENTWISE = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
    torch.float16: {"atol": 3e-3, "rtol": 3e-3},
}

# Kept logits after top_k_top_p: which entries are masked must match exactly; kept values are the
# input's own, so they must match to float32 rounding.
MASKED_LOGITS = {"atol": 1e-6, "rtol": 1e-6}

# Linear methods vs the dense layer on weights the scheme represents exactly: max |got - want| <=
# bound * max |want|. The weights are exact, so this only allows for the activations: weight-only
# kernels commonly round them to bfloat16 (2**-9 relative) whatever the model dtype, and the
# output is rounded to the model dtype.
LINEAR = {
    torch.float32: 1e-2,
    torch.bfloat16: 2e-2,
    torch.float16: 1e-2,
}

# The model step through a StepRunner vs the same step unwrapped, float32 logits of the tiny model
# (|logits| of order 10): a compiled or captured graph may fuse and reorder reductions.
STEP_LOGITS = {
    torch.float32: {"atol": 1e-3, "rtol": 1e-4},
    torch.bfloat16: {"atol": 2.5e-1, "rtol": 2e-2},
    torch.float16: {"atol": 5e-2, "rtol": 5e-3},
}

# An fp8 linear method vs the dense layer on e4m3-exact weights: the activations may be rounded to
# e4m3 too (3 mantissa bits, 2**-4 relative per element), which over a K-long dot product of random
# signs averages down to a few percent of the largest output.
FP8_LINEAR = 6e-2
