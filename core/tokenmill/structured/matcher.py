"""GrammarState: one sequence's position in its grammar, advanced by every token it samples."""

from __future__ import annotations

from typing import Any


class GrammarState:
    """Wraps an xgrammar GrammarMatcher for one sequence (each of a request's n samples has its own).

    The engine calls `accept` with every sampled token; the batch mask asks `fill` for the
    tokens allowed next. A token the grammar refuses (only possible when something bypassed the
    mask, e.g. a plugin's own sampling) marks the state broken, and the sequence then stops.
    """

    __slots__ = ("_matcher", "broken")

    def __init__(self, compiled: Any) -> None:
        import xgrammar

        self._matcher = xgrammar.GrammarMatcher(compiled)
        self.broken = False

    def fill(self, bitmask: Any, index: int) -> None:
        """Write the allowed-next-token bits into row `index` of the int32 bitmask [R, ceil(V / 32)]."""
        self._matcher.fill_next_token_bitmask(bitmask, index)

    def accept(self, token_id: int) -> bool:
        """Advance past `token_id`; False (and broken) when the grammar does not allow it."""
        if self.broken or self._matcher.is_terminated():
            return not self.broken
        ok = self._matcher.accept_token(token_id)
        if not ok:
            self.broken = True
        return ok

    @property
    def terminated(self) -> bool:
        """True once the grammar has accepted a stop token: nothing may follow."""
        return self._matcher.is_terminated()
