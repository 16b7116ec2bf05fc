"""Optional use of intel_extension_for_pytorch (IPEX): a probe and the op overrides it can supply.

IPEX is used only when it imports and was built for torch's major.minor; anything else (absent,
broken, mismatched) means plain torch, because the plugin must never fail without it. The probe
keeps why (`ipex_status`), and `tokenmill plugins` shows it in the cpu plugin's note.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch

MODULE_NAME = "intel_extension_for_pytorch"


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


@dataclass(frozen=True, slots=True)
class IpexProbe:
    """The IPEX module when the plugin uses it, and one line saying whether it is in use or why not."""

    module: Any | None
    status: str


@lru_cache(maxsize=1)
def _load() -> IpexProbe:
    """Import IPEX and check it was built for this torch's major.minor."""
    try:
        module = importlib.import_module(MODULE_NAME)
    except ImportError:
        return IpexProbe(None, "intel_extension_for_pytorch not in use: not installed (pip install 'tokenmill[cpu-ipex]')")
    except Exception as exc:  # broken: IPEX is an optional accelerator, never a requirement
        return IpexProbe(None, f"intel_extension_for_pytorch not in use: its import failed ({type(exc).__name__}: {exc})")
    version = str(getattr(module, "__version__", ""))
    if _major_minor(version) != _major_minor(torch.__version__):
        return IpexProbe(None, f"intel_extension_for_pytorch not in use: version {version or '(unknown)'} does not "
                               f"match torch {torch.__version__} (it needs the same major.minor)")
    return IpexProbe(module, f"intel_extension_for_pytorch {version} in use")


def ipex_version() -> str | None:
    """IPEX's version string when the plugin will use it, else None."""
    module = _load().module
    return str(module.__version__) if module is not None else None


def ipex_status() -> str:
    """Whether IPEX is in use, or why not (not installed, import failed, version mismatch)."""
    return _load().status


def ipex_ops() -> dict[str, Callable[..., Any]]:
    """Op overrides (names from tokenmill.ops.registry.OP_NAMES) backed by IPEX; empty without it."""
    module = _load().module
    functional = getattr(getattr(module, "llm", None), "functional", None)
    rms_norm = getattr(functional, "rms_norm", None)
    if rms_norm is None:
        return {}

    def ipex_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """x [T, H], weight [H] -> [T, H] through IPEX's fused kernel."""
        return rms_norm(x, weight, eps)

    return {"rms_norm": ipex_rms_norm}
