"""Named ops that plugins may override, with the core's plain-torch references."""

from tokenmill.ops.registry import OP_NAMES, OpRegistry

__all__ = ["OP_NAMES", "OpRegistry"]
