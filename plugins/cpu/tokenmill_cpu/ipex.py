"""Optional use of intel_extension_for_pytorch (IPEX): a probe and the op overrides it can supply.

IPEX is used only when it imports and was built for torch's major.minor; anything else (absent,
broken, mismatched) silently means plain torch, because the plugin must never fail without it.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any, Callable

import torch

MODULE_NAME = "intel_extension_for_pytorch"


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


@lru_cache(maxsize=1)
def _load() -> Any | None:
    """The IPEX module when it is importable and matches torch's major.minor, else None."""
    try:
        module = importlib.import_module(MODULE_NAME)
    except Exception:  # absent or broken: IPEX is an optional accelerator, never a requirement
        return None
    version = str(getattr(module, "__version__", ""))
    if _major_minor(version) != _major_minor(torch.__version__):
        return None
    return module


def ipex_version() -> str | None:
    """IPEX's version string when the plugin will use it, else None."""
    module = _load()
    return str(module.__version__) if module is not None else None


def ipex_ops() -> dict[str, Callable[..., Any]]:
    """Op overrides (names from tokenmill.ops.registry.OP_NAMES) backed by IPEX; empty without it."""
    module = _load()
    functional = getattr(getattr(module, "llm", None), "functional", None)
    rms_norm = getattr(functional, "rms_norm", None)
    if rms_norm is None:
        return {}

    def ipex_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """x [T, H], weight [H] -> [T, H] through IPEX's fused kernel."""
        return rms_norm(x, weight, eps)

    return {"rms_norm": ipex_rms_norm}
