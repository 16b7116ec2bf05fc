"""Tool calling: the request's tools and tool_choice, and the per-family parsers of tool calls in model text."""

from tokenmill.server.tools.parser import ParsedCall, ToolCallParser
from tokenmill.server.tools.registry import TOOL_CALL_PARSERS, tool_call_parser

__all__ = ["TOOL_CALL_PARSERS", "ParsedCall", "ToolCallParser", "tool_call_parser"]
