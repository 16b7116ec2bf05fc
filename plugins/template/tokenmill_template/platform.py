"""TemplatePlatform: what the template backend says about its device."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.interfaces import Availability
from tokenmill.plugin_base import probe_availability

# The contract version this plugin was written against, as a literal: importing the core's
# CONTRACT_VERSION would always match whatever tokenmill is installed and hide a mismatch.
BUILT_FOR_CONTRACT = "2.0"


@dataclass(frozen=True, slots=True)
class TemplatePlatform:
    """A device named "template" whose tensors live on the host CPU (device_type "cpu")."""

    name: str = "template"  # the --device name; equal to the entry-point name in pyproject.toml
    device_type: str = "cpu"  # your torch device type: "cuda", "xpu", "hpu", "xla", "privateuseone", ...
    priority: int = 0  # below cpu's 10, so the template is chosen only with --device template
    contract_version: str = BUILT_FOR_CONTRACT
    supported_dtypes: tuple[str, ...] = ("float32", "bfloat16")  # the first is what --dtype auto takes
    dist_backend: str = "gloo"  # your collective library's torch.distributed backend ("nccl", "hccl", ...)
    static_shapes: bool = False  # True: the core pads every step to your ShapeBuckets (XLA, graphs)
    graph_capture: str | None = None  # informative only: "cuda_graphs", "hpu_graphs", "xla"

    def is_available(self) -> Availability:
        """Whether the device can be used now; the reason explains a "no"."""
        return probe_availability(_missing_requirement, "the template device", ok_reason="host CPU, plain torch")


def _missing_requirement() -> str | None:
    """The first thing this machine lacks, or None. Put your runtime checks here: import the
    vendor's torch extension, count devices, compare driver versions. Exceptions are caught."""
    return None
