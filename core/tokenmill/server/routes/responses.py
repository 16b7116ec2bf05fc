"""POST /v1/responses: OpenAI's Responses API, stateless, run through the chat-completions route.

The request is translated into a chat-completions request (responses_translate.py) and answered
by the chat route itself, so the chat template, sampling, limits, admission and metrics are the
chat path's; its completion (or its stream of chunks) is translated back into a response object
(or the Responses events, responses_stream.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from tokenmill.server.error_handlers import ApiError
from tokenmill.server.protocol import ERROR_RESPONSES, ChatCompletionRequest, streamed
from tokenmill.server.request_guard import GuardedRoute
from tokenmill.server.responses_protocol import ResponseObject, ResponsesRequest
from tokenmill.server.responses_stream import ResponsesStream, chat_chunks
from tokenmill.server.responses_translate import (CHAT_PARAM_NAMES, chat_request, check_stateless,
                                                  from_chat_completion, new_id,
                                                  response_object)
from tokenmill.server.routes.chat import create_chat_completion

router = APIRouter(route_class=GuardedRoute, responses=ERROR_RESPONSES)
# Each streamed event is `event: <type>` plus `data: <JSON of the event>`, as OpenAI sends them.
_EVENT_SCHEMA = {"type": "object", "required": ["event", "data"],
                 "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}
_STREAMED = {200: {**streamed(ResponseObject)[200], "content": {"text/event-stream": {"schema": _EVENT_SCHEMA}}}}


@router.post("/v1/responses", responses=_STREAMED)
async def create_response(body: ResponsesRequest, raw: Request) -> Response:
    check_stateless(body)
    chat_body = _chat_body(body)
    try:
        answer = await create_chat_completion(chat_body, raw)
    except ApiError as exc:
        exc.param = CHAT_PARAM_NAMES.get(exc.param or "", exc.param)
        raise
    response_id = new_id("resp")
    if isinstance(answer, StreamingResponse):
        return StreamingResponse(_events(body, response_id, answer), media_type="text/event-stream")
    if not isinstance(answer, JSONResponse):
        return answer  # the client went away (499)
    completion = json.loads(answer.body)
    return JSONResponse(from_chat_completion(body, response_id, completion).model_dump(mode="json"))


def _chat_body(body: ResponsesRequest) -> ChatCompletionRequest:
    """The chat request, its validation errors named after the Responses field they came from."""
    try:
        return ChatCompletionRequest.model_validate(chat_request(body))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err.get("loc") else None
        param = CHAT_PARAM_NAMES.get(name or "", name)
        raise ApiError(400, f"invalid request: {param}: {err.get('msg', 'invalid value')}", param=param) from None


async def _events(body: ResponsesRequest, response_id: str, answer: StreamingResponse) -> AsyncIterator[str]:
    chunks = chat_chunks(answer.body_iterator)
    stream = ResponsesStream(response_object(body, response_id, "", status="in_progress"))
    model_known = False
    try:
        async for chunk in chunks:
            if "error" in chunk:
                for event in stream.fail(chunk["error"]):
                    yield event
                return
            if not model_known:
                stream.response = stream.response.model_copy(update={"model": chunk.get("model", "")})
                model_known = True
                for event in stream.start():
                    yield event
            for event in stream.feed(chunk):
                yield event
        for event in stream.finish():
            yield event
    finally:
        await chunks.aclose()
        await answer.body_iterator.aclose()
