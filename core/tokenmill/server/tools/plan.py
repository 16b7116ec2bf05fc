"""ToolPlan: a chat request's tools and tool_choice, checked, and what they ask of the engine and the answer.

tool_choice "none" answers in text; "auto" lets the model choose and reads its calls with the
server's --tool-call-parser; "required" and a named function constrain the output (structured
outputs) to JSON that holds the calls, so the arguments always parse and match each schema. That
JSON is compact (no free whitespace): it is read by a program, and small models given free
whitespace tend to pad and repeat until max_tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tokenmill.server.error_handlers import ApiError
from tokenmill.server.protocol import ChatCompletionRequest
from tokenmill.server.tools.parser import ParsedCall, ToolCallParser, call_from_object
from tokenmill.server.tools.registry import tool_call_parser
from tokenmill.structured.params import StructuredOutputsParams


@dataclass(slots=True)
class ToolPlan:
    """mode: none | auto | required | named (or "" when the request has no tools)."""

    mode: str = ""
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> parameters schema
    named: str | None = None
    parser: ToolCallParser | None = None
    constraint: StructuredOutputsParams | None = None
    template_tools: list[dict[str, Any]] | None = None  # passed to the chat template as `tools`

    @property
    def finish_reason(self) -> str:
        """What a choice that called tools finishes with (OpenAI: "stop" for a named function)."""
        return "stop" if self.mode == "named" else "tool_calls"

    def calls(self, text: str, final: bool) -> tuple[str | None, list[ParsedCall]]:
        """(content so far, complete calls so far) of a choice's text; content None when it is all calls."""
        if self.mode == "auto" and self.parser is not None:
            return self.parser.split(text, final)
        if self.mode not in ("required", "named"):
            return text, []
        if not final:
            return None, []  # the whole answer is the constrained JSON: read it once it is complete
        return None, self._constrained_calls(text)

    def _constrained_calls(self, text: str) -> list[ParsedCall]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return []  # cut off by max_tokens or a stop string: no complete call
        if self.mode == "named":
            return [ParsedCall(self.named, json.dumps(value, ensure_ascii=False))] if isinstance(value, dict) else []
        return [c for c in (call_from_object(v, ("parameters",)) for v in value) if c is not None]


def _functions(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type", "function") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ApiError(400, f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                                f"\"parameters\": {{...}}}}}}", param="tools")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise ApiError(400, f"tools[{i}].function.parameters must be a JSON schema object", param="tools")
        if fn["name"] in out:
            raise ApiError(400, f"tools holds two functions named {fn['name']!r}; names must be unique", param="tools")
        out[fn["name"]] = params
    return out


def _required_schema(functions: dict[str, dict[str, Any]], parallel: bool) -> dict[str, Any]:
    """A JSON array of one or more {"name": <a tool>, "parameters": <its arguments>} objects."""
    options = [{"type": "object", "properties": {"name": {"type": "string", "enum": [name]}, "parameters": schema},
                "required": ["name", "parameters"], "additionalProperties": False}
               for name, schema in functions.items()]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": options}}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def _choice(body: ChatCompletionRequest) -> tuple[str, str | None]:
    choice = body.tool_choice
    if choice is None:
        return ("auto" if body.tools else "none"), None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise ApiError(400, f"tool_choice must be none, auto, required or {{\"type\": \"function\", \"function\": "
                                f"{{\"name\": ...}}}}, got {choice!r}", param="tool_choice")
        return choice, None
    name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
    if not isinstance(name, str):
        raise ApiError(400, "a named tool_choice is {\"type\": \"function\", \"function\": {\"name\": ...}}",
                       param="tool_choice")
    return "named", name


def tool_plan(body: ChatCompletionRequest, parser_name: str | None) -> ToolPlan:
    """Check the request's tools and tool_choice; `parser_name` is the server's --tool-call-parser."""
    mode, named = _choice(body)
    if not body.tools:
        if mode in ("required", "named"):
            raise ApiError(400, f"tool_choice {mode} needs tools; send the functions in tools", param="tool_choice")
        return ToolPlan()
    functions = _functions(body.tools)
    plan = ToolPlan(mode=mode, functions=functions, named=named, template_tools=list(body.tools))
    if mode == "auto":
        if parser_name is None:
            raise ApiError(400, "tool_choice \"auto\" (the default with tools) needs a tool-call parser: start the "
                                "server with --tool-call-parser (hermes, qwen, llama3_json or mistral), or send "
                                "tool_choice \"required\" or a named function", param="tool_choice")
        plan.parser = tool_call_parser(parser_name)
    elif mode == "named":
        if named not in functions:
            raise ApiError(400, f"tool_choice names {named!r}, which is not in tools ({', '.join(functions)})",
                           param="tool_choice")
        plan.constraint = StructuredOutputsParams(json=functions[named], disable_any_whitespace=True)
    elif mode == "required":
        schema = _required_schema(functions, body.parallel_tool_calls is not False)
        plan.constraint = StructuredOutputsParams(json=schema, disable_any_whitespace=True)
    return plan
