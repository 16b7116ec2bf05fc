"""Pydantic models of POST /v1/responses (OpenAI's Responses API, stateless): the request, the response
object and its output items, shaped as the official `openai` package's types."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from tokenmill.server.protocol import _Strict


class ResponsesStreamOptions(_Strict):
    include_obfuscation: bool | None = None  # padding against side channels; nothing to pad here, ignored


class TextConfig(_Strict):
    format: dict[str, Any] | None = None  # {"type": "text"} | {"type": "json_schema", ...} | {"type": "json_object"}
    verbosity: Literal["low", "medium", "high"] | None = None  # only "medium" (the default) is accepted


class ReasoningConfig(_Strict):
    effort: str | None = None  # passed on as the chat request's reasoning_effort
    summary: str | None = None  # no reasoning summaries; accepted and ignored
    generate_summary: str | None = None  # older spelling of summary


class ResponsesRequest(_Strict):
    """POST /v1/responses. Known fields that change nothing are handled by field_policy.py."""

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    stream_options: ResponsesStreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    truncation: Literal["auto", "disabled"] | None = None  # only "disabled": a prompt too long is a 400
    include: list[str] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)  # only 0
    max_tool_calls: int | None = Field(None, ge=1)  # limits built-in tool calls; there are none, ignored
    # refused until tokenmill keeps state (a 400 that says so, not an unknown-field error)
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    content: list[OutputText] = Field(default_factory=list)


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText] = Field(default_factory=list)
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


class FunctionCallItem(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str = ""
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


OutputItem = OutputMessage | ReasoningItem | FunctionCallItem


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0  # prompt tokens served from the prefix cache, as the chat path reports them
    cache_write_tokens: int = 0  # OpenAI's explicit cache breakpoints; tokenmill has none


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseObject(BaseModel):
    """The response object: returned whole, or carried by the stream's created/completed events."""

    id: str
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    model: str
    status: Literal["in_progress", "completed", "incomplete", "failed"] = "completed"
    output: list[OutputItem] = Field(default_factory=list)
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    truncation: Literal["auto", "disabled"] = "disabled"
    store: bool = False
    background: bool = False
    previous_response_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    error: dict[str, Any] | None = None
    incomplete_details: IncompleteDetails | None = None
    usage: ResponseUsage | None = None
