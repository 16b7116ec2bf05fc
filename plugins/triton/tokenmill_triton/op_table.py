"""The op overrides a GPU plugin hands to tokenmill's registry, keyed by tokenmill.ops.OP_NAMES."""

from __future__ import annotations

from typing import Any, Callable


def triton_ops() -> dict[str, Callable[..., Any]]:
    """Every override this package supplies; importing the kernels happens here, not at import."""
    from tokenmill_triton.activation import silu_and_mul
    from tokenmill_triton.fused_moe import fused_moe
    from tokenmill_triton.norm import fused_add_rms_norm, rms_norm
    from tokenmill_triton.rotary import rotary
    from tokenmill_triton.sampling import top_k_top_p

    return {
        "rms_norm": rms_norm,
        "fused_add_rms_norm": fused_add_rms_norm,
        "rotary": rotary,
        "silu_and_mul": silu_and_mul,
        "top_k_top_p": top_k_top_p,
        "fused_moe": fused_moe,
    }
