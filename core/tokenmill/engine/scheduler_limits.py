"""The step budget and batch cap an engine runs with: the user's, else the platform's, else the core's."""

from __future__ import annotations

import dataclasses
from typing import Any

from tokenmill.config import EngineArgs
from tokenmill.errors import PluginError

# What --max-num-batched-tokens and --max-num-seqs fall back to where the platform suggests nothing
# (the CPU plugin, small GPUs): sized for a few cores or a card of modest memory.
CORE_DEFAULTS = {"max_num_batched_tokens": 2048, "max_num_seqs": 256}


def platform_suggestions(platform: Any) -> dict[str, int]:
    """The platform's optional `scheduler_defaults`, checked: positive ints for known names only."""
    suggested = dict(getattr(platform, "scheduler_defaults", None) or {})
    for name, value in suggested.items():
        if name not in CORE_DEFAULTS or not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PluginError(f"platform {platform.name!r} suggests scheduler_defaults {name}={value!r}; only "
                              f"positive integers for {', '.join(CORE_DEFAULTS)} are allowed (fix the plugin)")
    return suggested


def resolve_scheduler_limits(args: EngineArgs, platform: Any) -> EngineArgs:
    """`args` with every scheduler limit the user left unset (None) filled in."""
    suggested = platform_suggestions(platform)
    unset = {name: suggested.get(name, default) for name, default in CORE_DEFAULTS.items()
             if getattr(args, name) is None}
    return dataclasses.replace(args, **unset) if unset else args
