"""ToolCallParser: what every family's parser does, split text into content and complete tool calls."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ParsedCall:
    """One complete tool call: the function's name and its arguments as JSON text."""

    name: str
    arguments: str


def hold_back(text: str, markers: tuple[str, ...]) -> str:
    """`text` less a trailing piece that could begin one of `markers` (it is not known yet to be text)."""
    for cut in range(max(len(m) for m in markers) - 1, 0, -1):
        tail = text[-cut:] if cut <= len(text) else None
        if tail and any(m.startswith(tail) and m != tail for m in markers):
            return text[:-cut]
    return text


def call_from_object(obj: Any, args_keys: tuple[str, ...] = ("arguments", "parameters")) -> ParsedCall | None:
    """{"name": ..., "arguments": {...}} (or "parameters") as a ParsedCall; None when it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = next((obj[k] for k in args_keys if k in obj), {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(obj["name"], json.dumps(args, ensure_ascii=False))


class ToolCallParser:
    """Splits a model's output into (content, calls) for tool_choice "auto".

    `split(text, final)` is called on the whole text so far. It returns the content that is
    certain to be content (text before the first tool-call marker, less a tail that may begin
    one) and the calls that are complete. Both only ever grow as text grows, so a stream sends
    their new parts, and the last call (final=True) equals what a non-streamed answer holds.
    """

    name = ""
    markers: tuple[str, ...] = ()

    def split(self, text: str, final: bool) -> tuple[str, list[ParsedCall]]:
        start = self._start(text)
        if start is None:
            return (text if final else hold_back(text, self.markers)), []
        return text[:start], self.calls(text[start:], final)

    def _start(self, text: str) -> int | None:
        found = [i for i in (text.find(m) for m in self.markers) if i >= 0]
        return min(found) if found else None

    def calls(self, text: str, final: bool) -> list[ParsedCall]:
        """The complete calls in `text`, which begins at the first marker."""
        raise NotImplementedError
