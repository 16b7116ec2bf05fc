"""The Intel Gaudi platform description and its availability check (habana_frameworks, an HPU)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from tokenmill.interfaces import Availability
from tokenmill.plugin_base import probe_availability

# The plugin contract version this plugin was written for; the core refuses it if that differs.
BUILT_FOR_CONTRACT = "2.0"

SKELETON_REASON = (
    "the gaudi plugin is a skeleton: its attention backend, KV allocator and communicator are not "
    "written yet; use --device cpu until a tokenmill-gaudi release supplies them"
)


@dataclass(frozen=True, slots=True)
class GaudiPlatform:
    """Intel Gaudi accelerators through habana_frameworks, torch device type "hpu"."""

    name: str = "gaudi"
    device_type: str = "hpu"
    priority: int = 70
    contract_version: str = BUILT_FOR_CONTRACT
    supported_dtypes: tuple[str, ...] = ("float32", "bfloat16")
    dist_backend: str = "hccl"
    static_shapes: bool = True  # HPU graphs recompile for every new shape, so shapes are bucketed
    graph_capture: str | None = "hpu_graphs"

    def is_available(self) -> Availability:
        """Check the Gaudi PyTorch bridge and a visible HPU; never raises."""
        return probe_availability(_missing_requirement, "Gaudi")


def _missing_requirement() -> str | None:
    """The first thing this machine lacks for Gaudi, or None when it has everything."""
    if importlib.util.find_spec("habana_frameworks") is None:
        return (
            "habana_frameworks is not installed: pip install 'tokenmill[gaudi]' inside Intel's Gaudi "
            "PyTorch container (the Gaudi software stack provides habana_frameworks)"
        )
    try:
        import habana_frameworks.torch.hpu as hpu
    except Exception as exc:
        return f"habana_frameworks is installed but its torch bridge failed to import: {type(exc).__name__}: {exc}"
    if not hpu.is_available():
        return "habana_frameworks sees no Gaudi device (habana_frameworks.torch.hpu.is_available() is False)"
    return SKELETON_REASON
