"""probe_availability: run a platform's requirement check and turn its answer, or its crash, into an Availability."""

from __future__ import annotations

from typing import Callable

from tokenmill.interfaces import Availability


def probe_availability(missing_requirement: Callable[[], str | None], what: str, ok_reason: str = "") -> Availability:
    """`missing_requirement()` returns the first thing the machine lacks, or None when it has all.

    Never raises: a check that crashes (a broken driver stack, a half-installed runtime) reads as
    "checking for <what> failed: <error>", so discovery goes on and the listing explains itself.
    """
    try:
        reason = missing_requirement()
    except Exception as exc:
        reason = f"checking for {what} failed: {type(exc).__name__}: {exc}"
    return Availability(False, reason) if reason else Availability(True, ok_reason)
