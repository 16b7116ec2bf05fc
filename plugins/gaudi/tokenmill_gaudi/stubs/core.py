"""Stand-in for habana_frameworks.torch.core: mark_step as a no-op that counts its calls."""

from __future__ import annotations

import threading

_lock = threading.Lock()
_calls = 0


def mark_step() -> None:
    """What htcore.mark_step() does on a Gaudi (flush the lazy graph); here only counted."""
    global _calls
    with _lock:
        _calls += 1


def mark_step_count() -> int:
    """mark_step calls since the process started (tests read differences of it)."""
    return _calls
