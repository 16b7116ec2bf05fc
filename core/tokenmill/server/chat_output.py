"""ChoiceRenderer: one chat choice's text as the assistant message or its stream deltas: reasoning_content,
content and tool_calls, through the request's reasoning splitter and tool plan."""

from __future__ import annotations

import uuid

from tokenmill.server.protocol import (AssistantMessage, DeltaFunctionCall, DeltaMessage, DeltaToolCall, FunctionCall,
                                       ToolCall)
from tokenmill.server.reasoning import ThinkSplitter
from tokenmill.server.tools.parser import ParsedCall
from tokenmill.server.tools.plan import ToolPlan


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class ChoiceRenderer:
    """Renders one choice; for a stream it remembers what was sent, so each delta holds only new parts."""

    def __init__(self, plan: ToolPlan, splitter: ThinkSplitter | None) -> None:
        self.plan = plan
        self.splitter = splitter
        self._sent = [0, 0, 0]  # reasoning chars, content chars, tool calls
        self._ids: list[str] = []

    def parts(self, text: str, final: bool) -> tuple[str | None, str | None, list[ParsedCall]]:
        """(reasoning, content, complete calls) of the text so far."""
        reasoning, rest = self.splitter.split(text, final) if self.splitter else (None, text)
        content, calls = self.plan.calls(rest, final)
        return reasoning, content, calls

    def finish_reason(self, reason: str | None, called: bool) -> str | None:
        """OpenAI's "tool_calls" when a choice that stopped normally called tools."""
        return self.plan.finish_reason if called and reason == "stop" else reason

    def message(self, text: str, reason: str | None) -> tuple[AssistantMessage, str | None]:
        """The whole answer of a finished choice, and its finish_reason."""
        reasoning, content, calls = self.parts(text, final=True)
        if calls and not (content or "").strip():
            content = None
        tool_calls = [ToolCall(id=self._id(i), function=FunctionCall(name=c.name, arguments=c.arguments))
                      for i, c in enumerate(calls)]
        message = AssistantMessage(content=content, reasoning_content=reasoning, tool_calls=tool_calls)
        return message, self.finish_reason(reason, bool(calls))

    def delta(self, text: str, final: bool) -> tuple[DeltaMessage | None, bool]:
        """The new parts since the last delta (None when nothing is new), and whether tools were called."""
        reasoning, content, calls = self.parts(text, final)
        sent = self._sent
        new_reasoning = (reasoning or "")[sent[0]:]
        new_content = (content or "")[sent[1]:]
        new_calls = calls[sent[2]:]
        self._sent = [len(reasoning or ""), len(content or ""), len(calls)]
        if not (new_reasoning or new_content or new_calls):
            return None, bool(calls)
        deltas = [DeltaToolCall(index=sent[2] + i, id=self._id(sent[2] + i), type="function",
                                function=DeltaFunctionCall(name=c.name, arguments=c.arguments))
                  for i, c in enumerate(new_calls)]
        return DeltaMessage(reasoning_content=new_reasoning or None, content=new_content or None,
                            tool_calls=deltas or None), bool(calls)

    def _id(self, index: int) -> str:
        while len(self._ids) <= index:
            self._ids.append(_call_id())
        return self._ids[index]
