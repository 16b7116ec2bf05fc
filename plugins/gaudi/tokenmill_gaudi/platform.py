"""The Intel Gaudi platform description and its availability check (habana_frameworks and an HPU, or the stubs)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from tokenmill.interfaces import Availability
from tokenmill.plugin_base import probe_availability

from tokenmill_gaudi.runtime import STUBS_ENV, runtime, stubs_requested

# The plugin contract version this plugin was written for; the core refuses it if that differs.
BUILT_FOR_CONTRACT = "2.0"
STUB_PRIORITY = 3  # below cpu's 10: the stubs are chosen only by name (--device gaudi)

STUBS_NOTE = (f"stubs: habana_frameworks stand-ins on the host CPU ({STUBS_ENV}=1; mark_step counted, "
              "HPU graphs replayed eagerly, HCCL as gloo, simulated memory); nothing runs on a Gaudi")


@dataclass(frozen=True, slots=True)
class GaudiPlatform:
    """Intel Gaudi accelerators through habana_frameworks (device type "hpu"), or its stubs ("cpu")."""

    availability: Availability
    name: str = "gaudi"
    device_type: str = "hpu"
    priority: int = 70
    contract_version: str = BUILT_FOR_CONTRACT
    supported_dtypes: tuple[str, ...] = ("bfloat16", "float32")
    dist_backend: str = "hccl"
    static_shapes: bool = True  # HPU graphs recompile for every new shape, so shapes are bucketed
    graph_capture: str | None = "hpu_graphs"

    def is_available(self) -> Availability:
        """The probe's answer, made when the platform was described; never raises."""
        return self.availability


def make_platform() -> GaudiPlatform:
    """The stub platform under TOKENMILL_GAUDI_STUBS=1, else the Gaudi one with what this machine lacks."""
    if stubs_requested():
        return GaudiPlatform(Availability(True, STUBS_NOTE), device_type="cpu", priority=STUB_PRIORITY,
                             supported_dtypes=("float32", "bfloat16"), dist_backend=runtime().dist_backend)
    return GaudiPlatform(probe_availability(_missing_requirement, "Gaudi", "Gaudi through habana_frameworks (HPU graphs, HCCL)"))


def _missing_requirement() -> str | None:
    """The first thing this machine lacks for Gaudi, or None when it has everything."""
    if importlib.util.find_spec("habana_frameworks") is None:
        return (
            "habana_frameworks is not installed: pip install 'tokenmill[gaudi]' inside Intel's Gaudi "
            f"PyTorch container (the Gaudi software stack provides habana_frameworks); {STUBS_ENV}=1 runs "
            "the plugin on its CPU stubs for testing"
        )
    try:
        hpu = runtime().hpu
    except Exception as exc:
        return f"habana_frameworks is installed but its torch bridge failed to import: {type(exc).__name__}: {exc}"
    if not hpu.is_available():
        return "habana_frameworks sees no Gaudi device (habana_frameworks.torch.hpu.is_available() is False)"
    return None
