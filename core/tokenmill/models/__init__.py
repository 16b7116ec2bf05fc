"""The model graphs (plain torch modules) and the registry that picks one by architecture name."""

from tokenmill.models.arch_config import ArchConfig, FamilyTraits
from tokenmill.models.layout import checkpoint_layout
from tokenmill.models.registry import ModelEntry, arch_config, model_entry, supported_architectures

__all__ = [
    "ArchConfig",
    "FamilyTraits",
    "ModelEntry",
    "arch_config",
    "checkpoint_layout",
    "model_entry",
    "supported_architectures",
]
