"""The stable registry of overridable ops: references from the core, overrides from one plugin."""

from __future__ import annotations

from typing import Any, Callable

from tokenmill.ops import fused_moe, reference
from tokenmill.structured.token_mask import apply_token_bitmask

# The names a plugin may override, with the reference each falls back to. Adding a name is
# backwards compatible; renaming or changing a signature needs a major CONTRACT_VERSION bump.
_REFERENCES: dict[str, Callable[..., Any]] = {
    "rms_norm": reference.rms_norm,
    "fused_add_rms_norm": reference.fused_add_rms_norm,
    "rotary": reference.rotary,
    "silu_and_mul": reference.silu_and_mul,
    "top_k_top_p": reference.top_k_top_p,
    "argmax": reference.argmax,  # since contract 2.0
    "sample": reference.sample,  # since contract 2.0: the whole sampling step
    "fused_moe": fused_moe.fused_moe,  # added within contract 2 (a new name is compatible): the expert MLP
    "apply_token_bitmask": apply_token_bitmask,  # added within contract 2.0 (optional): structured outputs
    "gelu_tanh_and_mul": reference.gelu_tanh_and_mul,  # Gemma's GeGLU
}
OP_NAMES = tuple(_REFERENCES)


class OpRegistry:
    """Resolves each op name to the platform's override or the core reference.

    Attribute access (`ops.rms_norm(...)`) is the fast path used inside model code.
    """

    def __init__(self, overrides: dict[str, Callable[..., Any]] | None = None) -> None:
        self._ops = dict(_REFERENCES)
        self.overridden: dict[str, str] = {}  # op name -> qualified name of the override
        for name, fn in (overrides or {}).items():
            self.override(name, fn)

    def override(self, name: str, fn: Callable[..., Any]) -> None:
        """Replace op `name`; unknown names are refused so typos don't silently do nothing."""
        if name not in _REFERENCES:
            raise ValueError(f"unknown op {name!r} in a plugin's op overrides; known ops: {', '.join(OP_NAMES)}")
        self._ops[name] = fn
        self.overridden[name] = getattr(fn, "__qualname__", repr(fn))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            return self.__dict__["_ops"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str) -> Callable[..., Any]:
        """The op callable for `name`."""
        return self._ops[name]
