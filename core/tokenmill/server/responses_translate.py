"""Translate a Responses request into a chat-completions request, and a chat completion back into a
response object: /v1/responses runs on the chat path, so everything the chat path learns (tools,
structured outputs, reasoning) reaches the Responses API through these two mappings."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from tokenmill.server.error_handlers import ApiError
from tokenmill.server.field_policy import ignored_fields
from tokenmill.server.responses_protocol import (FunctionCallItem, IncompleteDetails, InputTokensDetails,
                                                 OutputItem, OutputMessage, OutputText, ReasoningItem,
                                                 ReasoningText, ResponseObject, ResponsesRequest, ResponseUsage)

log = logging.getLogger(__name__)

_TEXT_PARTS = ("input_text", "output_text", "text")
# Responses' names for the chat request's fields, so a refusal from the chat path names the field sent.
CHAT_PARAM_NAMES = {"messages": "input", "max_completion_tokens": "max_output_tokens", "max_tokens":
                    "max_output_tokens", "response_format": "text.format", "top_logprobs": "top_logprobs"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def check_stateless(body: ResponsesRequest) -> None:
    """Refuse what needs stored state or options that change the output and are not supported."""
    for name in ("previous_response_id", "conversation", "prompt"):
        if getattr(body, name) is not None:
            raise ApiError(400, f"{name} is not supported: tokenmill's /v1/responses is stateless (it stores no "
                                f"responses, conversations or prompts); send the whole conversation in input",
                           param=name)
    if body.truncation == "auto":
        raise ApiError(400, "truncation=\"auto\" is not supported: an input too long for the context is refused, "
                            "never cut; send truncation=\"disabled\" or leave it out", param="truncation")
    if body.top_logprobs:
        raise ApiError(400, "top_logprobs is not supported on /v1/responses yet; use /v1/chat/completions with "
                            "logprobs=true", param="top_logprobs")
    if body.text and body.text.verbosity not in (None, "medium"):
        raise ApiError(400, f"text.verbosity={body.text.verbosity!r} is not supported: it would change the output "
                            f"and tokenmill has no verbosity control; send \"medium\" or leave it out",
                       param="text.verbosity")
    unknown = [name for name in body.include or () if name != "reasoning.encrypted_content"]
    if unknown:
        raise ApiError(400, f"include {unknown} is not supported; tokenmill can only leave out encrypted reasoning "
                            f"(reasoning.encrypted_content: there is none to include)", param="include")


def chat_request(body: ResponsesRequest) -> dict[str, Any]:
    """The chat-completions request body that produces this response."""
    chat: dict[str, Any] = {"messages": _messages(body), "stream": body.stream}
    if body.model is not None:
        chat["model"] = body.model
    if body.stream:
        chat["stream_options"] = {"include_usage": True}
    for ours, theirs in (("max_output_tokens", "max_completion_tokens"), ("temperature", "temperature"),
                         ("top_p", "top_p"), ("parallel_tool_calls", "parallel_tool_calls")):
        if getattr(body, ours) is not None:
            chat[theirs] = getattr(body, ours)
    if body.tools:
        chat["tools"] = [_chat_tool(tool, i) for i, tool in enumerate(body.tools)]
    if body.tool_choice is not None:
        chat["tool_choice"] = _chat_tool_choice(body.tool_choice)
    if body.text and body.text.format and body.text.format.get("type", "text") != "text":
        chat["response_format"] = _chat_response_format(body.text.format)
    if body.reasoning and body.reasoning.effort is not None:
        chat["reasoning_effort"] = body.reasoning.effort
    return chat


def _messages(body: ResponsesRequest) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": body.instructions}] if body.instructions else []
    if isinstance(body.input, str):
        return [*messages, {"role": "user", "content": body.input}]
    for i, item in enumerate(body.input):
        message = _message(item, i)
        if message is not None:
            messages.append(message)
    return messages


def _message(item: dict[str, Any], index: int) -> dict[str, Any] | None:
    """One input item as a chat message; None for an item the chat path does not need."""
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise ApiError(400, f"input[{index}].role must be user, assistant, system or developer, got {role!r}",
                           param="input")
        return {"role": role, "content": _text(item.get("content"), index)}
    if kind == "function_call":
        call = {"id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}
        return {"role": "assistant", "content": "", "tool_calls": [call]}
    if kind == "function_call_output":
        return {"role": "tool", "tool_call_id": item.get("call_id"), "content": _text(item.get("output"), index)}
    if kind == "reasoning":
        log.debug("input[%d]: a reasoning item from an earlier turn is dropped (templates drop old thinking)", index)
        return None
    raise ApiError(400, f"input[{index}] has type {kind!r}; tokenmill takes message, function_call, "
                        f"function_call_output and reasoning items", param="input")


def _text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(400, f"input[{index}].content must be a string or a list of input_text parts", param="input")
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ApiError(400, f"input[{index}].content: only text parts are supported, got {kind!r}; send "
                                f"{{\"type\": \"input_text\", \"text\": ...}}", param="input")
        texts.append(part["text"])
    return "\n".join(texts)


def _chat_tool(tool: dict[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise ApiError(400, f"tools[{index}] has type {tool.get('type')!r}; tokenmill has no built-in tools, only "
                            f"function tools", param="tools")
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    raise ApiError(400, f"tool_choice {choice!r} is not supported; use none, auto, required or "
                        f"{{\"type\": \"function\", \"name\": ...}}", param="tool_choice")


def _chat_response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return dict(fmt)


# ----------------------------------------------------------------------------- chat completion -> response


def response_object(body: ResponsesRequest, response_id: str, model: str, **fields: Any) -> ResponseObject:
    """A response object echoing the request's settings, as OpenAI's does."""
    return ResponseObject(
        id=response_id, model=model, instructions=body.instructions, max_output_tokens=body.max_output_tokens,
        temperature=body.temperature, top_p=body.top_p, tools=list(body.tools or []),
        tool_choice=body.tool_choice or "auto",
        parallel_tool_calls=True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        text={"format": (body.text.format if body.text and body.text.format else {"type": "text"})},
        metadata=dict(ignored_fields(body).get("metadata") or {}), **fields)


def output_items(message: dict[str, Any], finish_reason: str | None) -> list[OutputItem]:
    """A chat completion's assistant message as output items: reasoning, then text, then tool calls."""
    status = "incomplete" if finish_reason == "length" else "completed"
    items: list[OutputItem] = []
    if message.get("reasoning_content"):
        items.append(ReasoningItem(id=new_id("rs"), content=[ReasoningText(text=message["reasoning_content"])],
                                   status=status))
    calls = message.get("tool_calls") or []
    if message.get("content") or not calls:
        items.append(OutputMessage(id=new_id("msg"), status=status,
                                   content=[OutputText(text=message.get("content") or "")]))
    for call in calls:
        function = call.get("function") or {}
        items.append(FunctionCallItem(id=new_id("fc"), call_id=call.get("id") or new_id("call"),
                                      name=function.get("name", ""), arguments=function.get("arguments") or "",
                                      status=status))
    return items


def usage_of(chat_usage: dict[str, Any] | None) -> ResponseUsage | None:
    if not chat_usage:
        return None
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return ResponseUsage(input_tokens=chat_usage.get("prompt_tokens", 0), output_tokens=chat_usage.get(
        "completion_tokens", 0), total_tokens=chat_usage.get("total_tokens", 0),
        input_tokens_details=InputTokensDetails(cached_tokens=cached))


def finished_fields(finish_reason: str | None, usage: dict[str, Any] | None) -> dict[str, Any]:
    """status, incomplete_details and usage of a finished response."""
    if finish_reason == "length":
        return {"status": "incomplete", "incomplete_details": IncompleteDetails(reason="max_output_tokens"),
                "usage": usage_of(usage)}
    return {"status": "completed", "usage": usage_of(usage)}


def from_chat_completion(body: ResponsesRequest, response_id: str, completion: dict[str, Any]) -> ResponseObject:
    """The response object of a finished (non-streamed) chat completion."""
    [choice] = completion["choices"]
    return response_object(body, response_id, completion["model"],
                           output=output_items(choice["message"], choice.get("finish_reason")),
                           **finished_fields(choice.get("finish_reason"), completion.get("usage")))
