"""POST /v1/chat/completions: messages through the chat template; n, logprobs, usage, SSE streaming,
with tool calls and reasoning_content (server/chat_prepare.py, server/chat_output.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tokenmill.outputs import CompletionOutput, RequestOutput
from tokenmill.server.chat_output import ChoiceRenderer
from tokenmill.server.chat_prepare import PreparedChat, prepare_chat
from tokenmill.server.error_handlers import error_body, error_for
from tokenmill.server.logprobs import chat_logprobs
from tokenmill.server.protocol import (ERROR_RESPONSES, ChatChoice, ChatChunkChoice, ChatCompletionChunk,
                                       ChatCompletionRequest, ChatCompletionResponse, ChatLogprobs, DeltaMessage,
                                       PromptTokensDetails, UsageInfo, streamed)
from tokenmill.server.request_guard import GuardedRoute
from tokenmill.server.state import ServerState, get_state
from tokenmill.server.streams import DONE_EVENT, peek, sse_event, unless_disconnected

router = APIRouter(route_class=GuardedRoute, responses=ERROR_RESPONSES)


@router.post("/v1/chat/completions", responses=streamed(ChatCompletionResponse))
async def create_chat_completion(body: ChatCompletionRequest, raw: Request) -> Response:
    state = get_state(raw)
    state.check_model(body.model)
    prepared = await prepare_chat(state, body)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    [ticket] = state.admission.admit([len(prepared.prompt_ids)], body.n)
    stream = state.admission.bounded(ticket, state.engine.generate(prepared.prompt_ids, prepared.params, request_id,
                                                                   priority=body.priority))
    if body.stream:
        peeked = await unless_disconnected(raw, peek(stream))
        if peeked is None:
            return Response(status_code=499)
        return StreamingResponse(_stream(state, body, prepared, request_id, peeked[1]), media_type="text/event-stream")
    final = await unless_disconnected(raw, _last(stream))
    if final is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    return JSONResponse(_response(state, body, prepared, request_id, final).model_dump())


async def _last(stream: AsyncIterator[RequestOutput]) -> RequestOutput:
    output = None
    async for output in stream:
        pass
    return output


def usage_of(output: RequestOutput) -> UsageInfo:
    """Token counts of a chat answer, with the prompt tokens the prefix cache served."""
    prompt = len(output.prompt_token_ids)
    completion = sum(len(c.token_ids) for c in output.outputs)
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                     prompt_tokens_details=PromptTokensDetails(cached_tokens=output.num_cached_tokens))


def _logprobs(state: ServerState, body: ChatCompletionRequest, token_ids: list[int],
              entries: list | None) -> ChatLogprobs | None:
    if not body.logprobs:
        return None
    return ChatLogprobs(content=chat_logprobs(token_ids, entries or [], body.top_logprobs or 0, state.tokenizer))


def _response(state: ServerState, body: ChatCompletionRequest, prepared: PreparedChat, request_id: str,
              final: RequestOutput) -> ChatCompletionResponse:
    choices = []
    for c in final.outputs:
        message, finish_reason = prepared.renderer().message(c.text, c.finish_reason)
        choices.append(ChatChoice(index=c.index, message=message, finish_reason=finish_reason,
                                  logprobs=_logprobs(state, body, c.token_ids, c.logprobs), stop_reason=c.stop_reason))
    return ChatCompletionResponse(id=request_id, model=state.model_name, choices=choices, usage=usage_of(final))


async def _stream(state: ServerState, body: ChatCompletionRequest, prepared: PreparedChat, request_id: str,
                  stream: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
    created = int(time.time())
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(choices: list[ChatChunkChoice], usage: UsageInfo | None = None) -> str:
        payload = ChatCompletionChunk(id=request_id, created=created, model=state.model_name, choices=choices,
                                      usage=usage)
        return sse_event(payload, exclude=None if include_usage else {"usage"})

    cursors = [_Cursor(prepared.renderer()) for _ in range(body.n)]
    try:
        yield chunk([ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                     for i in range(body.n)])
        final = None
        async for final in stream:
            choices = [c for c in (_delta(state, body, comp, cursors[comp.index]) for comp in final.outputs) if c]
            if choices:
                yield chunk(choices)
        if include_usage and final is not None:
            yield chunk([], usage_of(final))
    except Exception as exc:
        status, message = error_for(exc)
        state.metrics.on_error(status)
        yield sse_event(error_body(status, message))
    yield DONE_EVENT


class _Cursor:
    """What one streamed choice has sent: tokens (for logprobs), whether it finished, its renderer."""

    def __init__(self, renderer: ChoiceRenderer) -> None:
        self.renderer = renderer
        self.num_tokens = 0
        self.finished = False


def _delta(state: ServerState, body: ChatCompletionRequest, completion: CompletionOutput,
           cursor: _Cursor) -> ChatChunkChoice | None:
    """The new reasoning, text, tool calls (and logprobs) of one choice since its last chunk; None when nothing."""
    if cursor.finished:
        return None
    done = completion.finished()
    delta, called = cursor.renderer.delta(completion.text, final=done)
    if delta is None and not done:
        return None  # nothing certain yet (a partial character or marker); it rides on the next chunk
    logprobs = _logprobs(state, body, completion.token_ids[cursor.num_tokens:],
                         (completion.logprobs or [])[cursor.num_tokens:])
    cursor.num_tokens, cursor.finished = len(completion.token_ids), done
    reason = cursor.renderer.finish_reason(completion.finish_reason, called)
    return ChatChunkChoice(index=completion.index, delta=delta or DeltaMessage(content=""), logprobs=logprobs,
                           finish_reason=reason)
