"""POST /v1/chat/completions: messages through the chat template; n, logprobs, usage, SSE streaming."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tokenmill.outputs import CompletionOutput, RequestOutput
from tokenmill.server.chat_template import render_chat
from tokenmill.server.error_handlers import error_body, error_for
from tokenmill.server.logprobs import chat_logprobs
from tokenmill.server.protocol import (ERROR_RESPONSES, AssistantMessage, ChatChoice, ChatChunkChoice,
                                       ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse,
                                       ChatLogprobs, DeltaMessage, UsageInfo, streamed)
from tokenmill.server.request_guard import GuardedRoute
from tokenmill.server.sampling import chat_params
from tokenmill.server.state import ServerState, get_state
from tokenmill.server.streams import DONE_EVENT, peek, sse_event, unless_disconnected

router = APIRouter(route_class=GuardedRoute, responses=ERROR_RESPONSES)


@router.post("/v1/chat/completions", responses=streamed(ChatCompletionResponse))
async def create_chat_completion(body: ChatCompletionRequest, raw: Request) -> Response:
    state = get_state(raw)
    state.check_model(body.model)
    params = chat_params(body, state.limits)
    prompt_ids = await render_chat(state, body.messages, add_generation_prompt=body.add_generation_prompt,
                                   continue_final_message=body.continue_final_message, extra=body.chat_template_kwargs)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    [ticket] = state.admission.admit([len(prompt_ids)], body.n)
    stream = state.admission.bounded(ticket, state.engine.generate(prompt_ids, params, request_id,
                                                                   priority=body.priority))
    if body.stream:
        peeked = await unless_disconnected(raw, peek(stream))
        if peeked is None:
            return Response(status_code=499)
        return StreamingResponse(_stream(state, body, request_id, peeked[1]), media_type="text/event-stream")
    final = await unless_disconnected(raw, _last(stream))
    if final is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    return JSONResponse(_response(state, body, request_id, final).model_dump())


async def _last(stream: AsyncIterator[RequestOutput]) -> RequestOutput:
    output = None
    async for output in stream:
        pass
    return output


def _usage(output: RequestOutput) -> UsageInfo:
    prompt = len(output.prompt_token_ids)
    completion = sum(len(c.token_ids) for c in output.outputs)
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _logprobs(state: ServerState, body: ChatCompletionRequest, token_ids: list[int],
              entries: list | None) -> ChatLogprobs | None:
    if not body.logprobs:
        return None
    return ChatLogprobs(content=chat_logprobs(token_ids, entries or [], body.top_logprobs or 0, state.tokenizer))


def _response(state: ServerState, body: ChatCompletionRequest, request_id: str,
              final: RequestOutput) -> ChatCompletionResponse:
    choices = [
        ChatChoice(index=c.index, message=AssistantMessage(content=c.text),
                   logprobs=_logprobs(state, body, c.token_ids, c.logprobs),
                   finish_reason=c.finish_reason, stop_reason=c.stop_reason)
        for c in final.outputs
    ]
    return ChatCompletionResponse(id=request_id, model=state.model_name, choices=choices, usage=_usage(final))


async def _stream(state: ServerState, body: ChatCompletionRequest, request_id: str,
                  stream: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
    created = int(time.time())
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(choices: list[ChatChunkChoice], usage: UsageInfo | None = None) -> str:
        payload = ChatCompletionChunk(id=request_id, created=created, model=state.model_name, choices=choices,
                                      usage=usage)
        return sse_event(payload.model_dump(exclude=None if include_usage else {"usage"}))

    sent = [[0, 0, False] for _ in range(body.n)]  # per choice: text chars, tokens, finished
    try:
        yield chunk([ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                     for i in range(body.n)])
        final = None
        async for final in stream:
            choices = [c for c in (_delta(state, body, comp, sent[comp.index]) for comp in final.outputs) if c]
            if choices:
                yield chunk(choices)
        if include_usage and final is not None:
            yield chunk([], _usage(final))
    except Exception as exc:
        status, message = error_for(exc)
        state.metrics.on_error(status)
        yield sse_event(error_body(status, message))
    yield DONE_EVENT


def _delta(state: ServerState, body: ChatCompletionRequest, completion: CompletionOutput,
           cursor: list) -> ChatChunkChoice | None:
    """The new text (and logprobs) of one choice since its last chunk; None when nothing to send."""
    text_len, num_tokens, finished = cursor
    if finished:
        return None
    text = completion.text[text_len:]
    if not text and not completion.finished():
        return None  # a token that does not complete a character yet; it rides on the next chunk
    logprobs = _logprobs(state, body, completion.token_ids[num_tokens:], (completion.logprobs or [])[num_tokens:])
    cursor[:] = [len(completion.text), len(completion.token_ids), completion.finished()]
    return ChatChunkChoice(index=completion.index, delta=DeltaMessage(content=text), logprobs=logprobs,
                           finish_reason=completion.finish_reason)
