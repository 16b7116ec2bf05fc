"""Hermes / Qwen tool calls: <tool_call>{"name": ..., "arguments": {...}}</tool_call>, one block per call."""

from __future__ import annotations

import json
import re

from tokenmill.server.tools.parser import ParsedCall, ToolCallParser, call_from_object

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_OPEN = re.compile(r"<tool_call>\s*(.*)$", re.DOTALL)


class HermesParser(ToolCallParser):
    """Qwen2.5/Qwen3, Hermes and most ChatML tool templates. A block is complete at its </tool_call>;
    a last block cut off without it counts when the text ends (final) and its JSON parses."""

    name = "hermes"
    markers = ("<tool_call>",)

    def calls(self, text: str, final: bool) -> list[ParsedCall]:
        bodies = _BLOCK.findall(text)
        if final:
            rest = _BLOCK.sub("", text)
            tail = _OPEN.search(rest)
            if tail:
                bodies.append(tail.group(1))
        out = []
        for body in bodies:
            try:
                call = call_from_object(json.loads(body))
            except json.JSONDecodeError:
                continue
            if call is not None:
                out.append(call)
        return out
