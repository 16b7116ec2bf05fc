"""Base classes and helpers that plugins share: the allocator, communicator, probe and defaults."""

from tokenmill.plugin_base.allocator import KVAllocatorBase
from tokenmill.plugin_base.availability import probe_availability
from tokenmill.plugin_base.communicator import TorchDistCommunicator
from tokenmill.plugin_base.execution import DefaultExecution, NoGradExecution
from tokenmill.plugin_base.optional import optional

__all__ = [
    "DefaultExecution",
    "KVAllocatorBase",
    "NoGradExecution",
    "TorchDistCommunicator",
    "optional",
    "probe_availability",
]
