"""The --tool-call-parser names and the parser each one picks."""

from __future__ import annotations

from tokenmill.server.tools.hermes import HermesParser
from tokenmill.server.tools.json_calls import Llama3JsonParser, MistralParser
from tokenmill.server.tools.parser import ToolCallParser

TOOL_CALL_PARSERS: dict[str, type[ToolCallParser]] = {
    "hermes": HermesParser,
    "qwen": HermesParser,  # Qwen2.5 / Qwen3 write Hermes-style <tool_call> blocks
    "llama3_json": Llama3JsonParser,
    "llama3": Llama3JsonParser,
    "mistral": MistralParser,
}


def tool_call_parser(name: str) -> ToolCallParser:
    """The parser for --tool-call-parser `name`; an unknown name raises ValueError listing the choices."""
    cls = TOOL_CALL_PARSERS.get(name)
    if cls is None:
        raise ValueError(f"unknown --tool-call-parser {name!r}; choose one of {', '.join(TOOL_CALL_PARSERS)}")
    return cls()
