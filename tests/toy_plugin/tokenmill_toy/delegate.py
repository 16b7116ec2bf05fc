"""Reaches the CPU plugin's hook functions, which the toy plugin calls as if it were the cpu platform."""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any


@functools.cache
def cpu_reference() -> tuple[ModuleType, Any]:
    """The tokenmill_cpu module and its own platform object, imported on first use.

    The toy imports tokenmill_cpu directly rather than through the plugin manager, so it keeps
    working when TOKENMILL_PLUGINS allows only "toy". Each CPU hook answers only for a platform
    named "cpu", so the toy passes the CPU plugin's own platform object.
    """
    import tokenmill_cpu

    return tokenmill_cpu, tokenmill_cpu.tokenmill_platform()
