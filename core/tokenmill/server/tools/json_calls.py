"""Tool calls written as bare JSON: Llama 3.x ({"name", "parameters"}, several joined by ";") and Mistral
([TOOL_CALLS][{"name", "arguments"}, ...])."""

from __future__ import annotations

import json

from tokenmill.server.tools.parser import ParsedCall, ToolCallParser, call_from_object, hold_back


def _objects(text: str) -> list | None:
    """The JSON values in `text`, one after another (separated by whitespace or ";"); None if any fails."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i] in " \t\r\n;":
            i += 1
        if i >= len(text):
            return values
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return None
        values.append(value)


class Llama3JsonParser(ToolCallParser):
    """Llama 3.1-3.3's JSON tool calls: the answer is `{"name": ..., "parameters": {...}}` (optionally after
    <|python_tag|>), several separated by ";". Only an answer that opens with `{` is a call, and only
    once the whole answer has parsed, so calls are sent when the text ends."""

    name = "llama3_json"
    markers = ("<|python_tag|>", "{")

    def split(self, text: str, final: bool) -> tuple[str, list[ParsedCall]]:
        body = text.lstrip()
        if body.startswith("<|python_tag|>"):
            body = body[len("<|python_tag|>"):].lstrip()
        elif not body.startswith("{"):
            if not final and "<|python_tag|>".startswith(body):
                return "", []
            return (text if final else hold_back(text, ("<|python_tag|>",))), []
        if not final:
            return "", []
        values = _objects(body)
        calls = [call_from_object(v) for v in values or []]
        if not values or any(c is None for c in calls):
            return text, []  # not tool calls after all: the JSON is the answer
        return "", calls  # type: ignore[return-value]


class MistralParser(ToolCallParser):
    """Mistral's `[TOOL_CALLS]` followed by a JSON list of {"name", "arguments"}. [TOOL_CALLS] is a special
    token, dropped from the text unless the request sends skip_special_tokens=false, so an answer that
    opens with a JSON list of calls counts too. Calls are sent when the text ends."""

    name = "mistral"
    markers = ("[TOOL_CALLS]",)

    def split(self, text: str, final: bool) -> tuple[str, list[ParsedCall]]:
        start = text.find("[TOOL_CALLS]")
        body = text[start + len("[TOOL_CALLS]"):] if start >= 0 else text.lstrip()
        if start < 0 and not body.startswith("["):
            return (text if final else hold_back(text, self.markers)), []
        content = text[:start] if start >= 0 else ""
        if not final:
            return content, []
        values = _objects(body.strip())
        items = [v for value in values or [] for v in (value if isinstance(value, list) else [value])]
        calls = [call_from_object(v) for v in items]
        if not calls or any(c is None for c in calls):
            return (text if start < 0 else content), []
        return content, calls  # type: ignore[return-value]
