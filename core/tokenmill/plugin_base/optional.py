"""optional: reads a hook result's optional contract member, with the default the contract documents."""

from __future__ import annotations

from typing import Any


def optional(obj: Any, name: str, default: Any) -> Any:
    """`obj.name` when the plugin supplies it, else `default` (interfaces.py lists each default).

    The one place the core tolerates a missing member, so optional parts of the contract are
    explicit rather than scattered `getattr` calls.
    """
    return getattr(obj, name, default)
