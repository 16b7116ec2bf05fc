"""The toy platform description: a pretend device backed by the host CPU through the CPU plugin."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from tokenmill.interfaces import Availability

# The plugin contract version this plugin was written for; the core refuses it if that differs.
BUILT_FOR_CONTRACT = 1
PLATFORM_NAME = "toy"  # the --device name and the entry-point name


@dataclass(frozen=True, slots=True)
class ToyPlatform:
    """A device named "toy" whose tensors live on the CPU."""

    name: str = PLATFORM_NAME
    device_type: str = "cpu"
    priority: int = 1
    contract_version: int = BUILT_FOR_CONTRACT
    supported_dtypes: tuple[str, ...] = ("float32", "bfloat16")
    dist_backend: str = "gloo"
    static_shapes: bool = False
    graph_capture: str | None = None

    def is_available(self) -> Availability:
        """Available wherever the CPU plugin it delegates to is installed; never raises."""
        if importlib.util.find_spec("tokenmill_cpu") is None:
            return Availability(False, "tokenmill_cpu is not installed, and the toy delegates to it: pip install 'tokenmill[cpu]'")
        return Availability(True, "toy device backed by the CPU plugin's kernels")
