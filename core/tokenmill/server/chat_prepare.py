"""prepare_chat: a chat request checked and made ready for the engine (params, prompt, tools, reasoning).

Everything that reads the agent features of a ChatCompletionRequest (tools, tool_choice,
response_format, structured_outputs, chat_template_kwargs.enable_thinking) goes through here, so
other routes (the Responses API) translate into a ChatCompletionRequest and reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokenmill.sampling.params import SamplingParams
from tokenmill.server.chat_output import ChoiceRenderer
from tokenmill.server.chat_template import render_chat
from tokenmill.server.error_handlers import ApiError
from tokenmill.server.protocol import ChatCompletionRequest
from tokenmill.server.reasoning import ThinkSplitter, reasoning_splitter
from tokenmill.server.sampling import chat_params
from tokenmill.server.structured import compile_constraint, constraint_field, request_constraint
from tokenmill.server.tools.plan import ToolPlan, tool_plan

if TYPE_CHECKING:
    from tokenmill.server.state import ServerState

_PROMPT_TAIL_TOKENS = 8  # enough of the prompt's end to see whether the template opened <think>


@dataclass(slots=True)
class PreparedChat:
    params: SamplingParams
    prompt_ids: list[int]
    tools: ToolPlan
    splitter: ThinkSplitter | None

    def renderer(self) -> ChoiceRenderer:
        """A fresh renderer for one choice."""
        return ChoiceRenderer(self.tools, self.splitter)


async def prepare_chat(state: ServerState, body: ChatCompletionRequest) -> PreparedChat:
    """Check the request, compile its constraint off the event loop, render the prompt (400s name the field)."""
    plan = tool_plan(body, state.tool_call_parser)
    constraint = request_constraint(body)
    if plan.constraint is not None:
        if constraint is not None:
            raise ApiError(400, f"tool_choice {plan.mode} constrains the output to tool calls; drop response_format "
                                f"and structured_outputs, or use tool_choice auto", param="tool_choice")
        constraint = plan.constraint
    params = chat_params(body, state.limits, constraint)
    if constraint is not None:
        await compile_constraint(state, constraint, "tools" if plan.constraint is not None else constraint_field(body))
    extra = dict(body.chat_template_kwargs or {})
    if plan.template_tools is not None:
        extra.setdefault("tools", plan.template_tools)
    prompt_ids = await render_chat(state, body.messages, add_generation_prompt=body.add_generation_prompt,
                                   continue_final_message=body.continue_final_message, extra=extra)
    return PreparedChat(params, prompt_ids, plan, await _splitter(state, body, prompt_ids))


async def _splitter(state: ServerState, body: ChatCompletionRequest, prompt_ids: list[int]) -> ThinkSplitter | None:
    """The reasoning splitter, unless the server has none or the request turned thinking off."""
    if state.reasoning_parser is None or (body.chat_template_kwargs or {}).get("enable_thinking") is False:
        return None
    tail = await state.in_tokenizer_thread(state.tokenizer.decode, prompt_ids[-_PROMPT_TAIL_TOKENS:])
    return reasoning_splitter(state.reasoning_parser, tail)
