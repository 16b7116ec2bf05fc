"""Turn a streamed chat completion (its chunks) into the Responses API's server-sent events.

The events follow OpenAI's names and order: response.created and response.in_progress, then per
output item output_item.added, its deltas (output_text / reasoning_text / function_call_arguments),
their done events and output_item.done, and last response.completed (or response.incomplete when
max_output_tokens cut the text, or error and response.failed when generation failed).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from tokenmill.server.responses_protocol import (FunctionCallItem, OutputItem, OutputMessage, OutputText,
                                                 ReasoningItem, ReasoningText, ResponseObject)
from tokenmill.server.responses_translate import finished_fields, new_id


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


class ResponsesStream:
    """The event sequence of one response; `feed` takes chat chunks, `finish` closes the response."""

    def __init__(self, initial: ResponseObject) -> None:
        self.response = initial
        self.sequence = 0
        self.items: list[OutputItem] = []
        self.open_key: Any = None  # "reasoning", "message" or ("tool", index): the item taking deltas
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **{k: _dump(v) for k, v in fields.items()}}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

    def start(self) -> list[str]:
        snapshot = self.response.model_copy(update={"status": "in_progress"})
        return [self.event("response.created", response=snapshot),
                self.event("response.in_progress", response=snapshot)]

    def feed(self, chunk: dict[str, Any]) -> list[str]:
        """The events of one chat chunk (a choice delta, or the final usage)."""
        events: list[str] = []
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                events += self._delta("reasoning", delta["reasoning_content"])
            if delta.get("content"):
                events += self._delta("message", delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _delta(self, key: str, text: str) -> list[str]:
        events = self._open(key, lambda: ReasoningItem(id=new_id("rs"), status="in_progress") if key == "reasoning"
                            else OutputMessage(id=new_id("msg"), status="in_progress"))
        item = self.items[-1]
        if isinstance(item, ReasoningItem):
            item.content[0].text += text
            return events + [self.event("response.reasoning_text.delta", item_id=item.id, output_index=len(
                self.items) - 1, content_index=0, delta=text)]
        item.content[0].text += text
        return events + [self.event("response.output_text.delta", item_id=item.id, output_index=len(self.items) - 1,
                                    content_index=0, delta=text, logprobs=[])]

    def _tool_delta(self, call: dict[str, Any]) -> list[str]:
        function = call.get("function") or {}
        key = ("tool", call.get("index", 0))
        events = self._open(key, lambda: FunctionCallItem(id=new_id("fc"), call_id=call.get("id") or new_id("call"),
                                                          name=function.get("name") or "", status="in_progress"))
        item = self.items[-1]
        arguments = function.get("arguments") or ""
        if arguments:
            item.arguments += arguments
            events.append(self.event("response.function_call_arguments.delta", item_id=item.id,
                                     output_index=len(self.items) - 1, delta=arguments))
        return events

    def _open(self, key: Any, make: Any) -> list[str]:
        """Open item `key` (closing the one before) unless it is the one taking deltas."""
        if key == self.open_key:
            return []
        events = self._close()
        item = make()
        self.items.append(item)
        self.open_key = key
        index = len(self.items) - 1
        events.append(self.event("response.output_item.added", output_index=index, item=item))
        if isinstance(item, OutputMessage):
            item.content.append(OutputText(text=""))
            events.append(self.event("response.content_part.added", item_id=item.id, output_index=index,
                                     content_index=0, part=OutputText(text="")))
        elif isinstance(item, ReasoningItem):
            item.content.append(ReasoningText(text=""))
        return events

    def _close(self) -> list[str]:
        if self.open_key is None:
            return []
        self.open_key = None
        item, index = self.items[-1], len(self.items) - 1
        item.status = "incomplete" if self.finish_reason == "length" else "completed"
        events = []
        if isinstance(item, OutputMessage):
            part = item.content[0]
            events += [self.event("response.output_text.done", item_id=item.id, output_index=index, content_index=0,
                                  text=part.text, logprobs=[]),
                       self.event("response.content_part.done", item_id=item.id, output_index=index,
                                  content_index=0, part=part)]
        elif isinstance(item, ReasoningItem):
            events.append(self.event("response.reasoning_text.done", item_id=item.id, output_index=index,
                                     content_index=0, text=item.content[0].text))
        else:
            events.append(self.event("response.function_call_arguments.done", item_id=item.id, output_index=index,
                                     arguments=item.arguments))
        return events + [self.event("response.output_item.done", output_index=index, item=item)]

    def finish(self) -> list[str]:
        """Close the open item (an empty message if nothing came) and send response.completed/incomplete."""
        events = [] if self.items else self._open("message", lambda: OutputMessage(id=new_id("msg"),
                                                                                   status="in_progress"))
        events += self._close()
        fields = finished_fields(self.finish_reason, self.usage)
        self.response = self.response.model_copy(update={"output": list(self.items), **fields})
        kind = "response.incomplete" if fields["status"] == "incomplete" else "response.completed"
        return events + [self.event(kind, response=self.response)]

    def fail(self, error: dict[str, Any]) -> list[str]:
        """An error event and response.failed, for a generation that failed mid-stream."""
        events = self._close()
        message, code = error.get("message", ""), error.get("code") or error.get("type") or "server_error"
        # the response object's error code is one of OpenAI's fixed set; a failed generation is a server_error
        self.response = self.response.model_copy(update={"output": list(self.items), "status": "failed",
                                                         "error": {"code": "server_error", "message": message}})
        return events + [self.event("error", code=code, message=message, param=error.get("param")),
                         self.event("response.failed", response=self.response)]


async def chat_chunks(body_iterator: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a chat completion's SSE stream (`data: {...}` events), up to [DONE]."""
    buffer = ""
    async for piece in body_iterator:
        buffer += piece.decode() if isinstance(piece, bytes) else piece
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            for line in event.splitlines():
                if line.startswith("data: ") and line[6:].strip() != "[DONE]":
                    yield json.loads(line[6:])
