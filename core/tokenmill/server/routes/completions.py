"""POST /v1/completions: prompts as text, a list of texts or token ids; echo, logprobs, n, stop, stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tokenmill.outputs import CompletionOutput, RequestOutput
from tokenmill.server.error_handlers import ApiError, error_body, error_for
from tokenmill.server.logprobs import extend_completion_logprobs
from tokenmill.server.protocol import (ERROR_RESPONSES, CompletionChoice, CompletionLogprobs, CompletionRequest,
                                       CompletionResponse, PromptTokensDetails, UsageInfo, streamed)
from tokenmill.server.request_guard import GuardedRoute
from tokenmill.server.sampling import completion_params
from tokenmill.server.state import ServerState, get_state
from tokenmill.server.structured import compile_constraint, constraint_field, request_constraint
from tokenmill.server.streams import DONE_EVENT, merge_streams, peek, sse_event, unless_disconnected

router = APIRouter(route_class=GuardedRoute, responses=ERROR_RESPONSES)


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """One engine prompt per entry: a string, a list of strings, token ids or lists of token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise ApiError(400, "prompt is empty; send a string, a list of strings or token ids", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    return list(prompt)


async def _encode(state: ServerState, prompts: list[str | list[int]]) -> list[list[int]]:
    """Token ids of every prompt; every text is length-checked before any is tokenized."""
    for p in prompts:
        if isinstance(p, str):
            if not p:
                raise ApiError(400, "prompt is empty; send at least one character or token id", param="prompt")
            state.check_text_length(p, "prompt")
    return [await state.encode(p, add_special_tokens=True, param="prompt") if isinstance(p, str) else p
            for p in prompts]


@router.post("/v1/completions", responses=streamed(CompletionResponse))
async def create_completion(body: CompletionRequest, raw: Request) -> Response:
    state = get_state(raw)
    state.check_model(body.model)
    constraint = request_constraint(body)
    params = completion_params(body, state.limits, constraint)
    if constraint is not None:
        await compile_constraint(state, constraint, constraint_field(body))
    request_id = f"cmpl-{uuid.uuid4().hex}"
    prompts = _prompts(body.prompt)
    prompt_ids = await _encode(state, prompts)
    texts = [p if isinstance(p, str) else None for p in prompts]
    tickets = state.admission.admit([len(ids) for ids in prompt_ids], body.n)
    streams = [state.admission.bounded(ticket, state.engine.generate(ids, params, f"{request_id}-{i}",
                                                                      priority=body.priority))
               for i, (ids, ticket) in enumerate(zip(prompt_ids, tickets))]
    merged = merge_streams(streams)
    if body.stream:
        peeked = await unless_disconnected(raw, peek(merged))
        if peeked is None:
            return Response(status_code=499)
        return StreamingResponse(_stream(state, body, request_id, texts, peeked[1]), media_type="text/event-stream")
    finals = await unless_disconnected(raw, _collect(merged, len(prompts)))
    if finals is None:
        return Response(status_code=499)  # the client is gone; nobody reads this
    return JSONResponse(_response(state, body, request_id, texts, finals).model_dump())


async def _collect(merged: AsyncIterator[tuple[int, RequestOutput]], count: int) -> list[RequestOutput]:
    finals: list[RequestOutput | None] = [None] * count
    async for index, output in merged:
        finals[index] = output
    return finals  # type: ignore[return-value]


def _prompt_text(state: ServerState, output: RequestOutput, text: str | None) -> str:
    """The prompt as echo returns it: the text sent, or the decoded ids."""
    return text if text is not None else state.tokenizer.decode(output.prompt_token_ids)


def _choice_logprobs(state: ServerState, body: CompletionRequest, output: RequestOutput,
                     completion: CompletionOutput) -> CompletionLogprobs | None:
    if body.logprobs is None:
        return None
    block, offset = CompletionLogprobs(), 0
    if body.echo:
        entries = output.prompt_logprobs or [None] * len(output.prompt_token_ids)
        offset = extend_completion_logprobs(block, output.prompt_token_ids, entries, state.tokenizer, offset)
    extend_completion_logprobs(block, completion.token_ids, completion.logprobs or [], state.tokenizer, offset)
    return block


def _usage(outputs: list[RequestOutput]) -> UsageInfo:
    prompt = sum(len(o.prompt_token_ids) for o in outputs)
    completion = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    cached = PromptTokensDetails(cached_tokens=sum(o.num_cached_tokens for o in outputs))
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                     prompt_tokens_details=cached)


def _response(state: ServerState, body: CompletionRequest, request_id: str, texts: list[str | None],
              finals: list[RequestOutput]) -> CompletionResponse:
    choices = []
    for prompt_index, output in enumerate(finals):
        prefix = _prompt_text(state, output, texts[prompt_index]) if body.echo else ""
        for completion in output.outputs:
            choices.append(CompletionChoice(
                index=prompt_index * body.n + completion.index, text=prefix + completion.text,
                logprobs=_choice_logprobs(state, body, output, completion),
                finish_reason=completion.finish_reason, stop_reason=completion.stop_reason))
    return CompletionResponse(id=request_id, model=state.model_name, choices=choices, usage=_usage(finals))


class _ChoiceCursor:
    """What one streamed choice has sent so far, so each chunk carries only the new part."""

    def __init__(self) -> None:
        self.text_len = 0
        self.num_tokens = 0
        self.text_offset = 0
        self.started = False
        self.finished = False


async def _stream(state: ServerState, body: CompletionRequest, request_id: str, texts: list[str | None],
                  merged: AsyncIterator[tuple[int, RequestOutput]]) -> AsyncIterator[str]:
    created, cursors, finals = int(time.time()), {}, {}
    try:
        async for prompt_index, output in merged:
            finals[prompt_index] = output
            for completion in output.outputs:
                index = prompt_index * body.n + completion.index
                cursor = cursors.setdefault(index, _ChoiceCursor())
                choice = _delta_choice(state, body, output, texts[prompt_index], completion, cursor, index)
                if choice is not None:
                    chunk = CompletionResponse(id=request_id, created=created, model=state.model_name,
                                               choices=[choice])
                    yield sse_event(chunk, exclude={"usage"})
        if body.stream_options and body.stream_options.include_usage:
            usage = _usage([finals[i] for i in sorted(finals)])
            yield sse_event(CompletionResponse(id=request_id, created=created, model=state.model_name,
                                               choices=[], usage=usage))
    except Exception as exc:
        status, message = error_for(exc)
        state.metrics.on_error(status)
        yield sse_event(error_body(status, message))
    yield DONE_EVENT


def _delta_choice(state: ServerState, body: CompletionRequest, output: RequestOutput, prompt_text: str | None,
                  completion: CompletionOutput, cursor: _ChoiceCursor, index: int) -> CompletionChoice | None:
    if cursor.finished:
        return None
    text = completion.text[cursor.text_len:]
    new_ids = completion.token_ids[cursor.num_tokens:]
    block = CompletionLogprobs() if body.logprobs is not None else None
    if not cursor.started and body.echo:
        text = _prompt_text(state, output, prompt_text) + text
        if block is not None:
            entries = output.prompt_logprobs or [None] * len(output.prompt_token_ids)
            cursor.text_offset = extend_completion_logprobs(block, output.prompt_token_ids, entries,
                                                            state.tokenizer, cursor.text_offset)
    if not text and not completion.finished():
        return None  # a token that does not complete a character yet; it rides on the next chunk
    if block is not None:
        entries = (completion.logprobs or [])[cursor.num_tokens:]
        cursor.text_offset = extend_completion_logprobs(block, new_ids, entries, state.tokenizer, cursor.text_offset)
    cursor.started, cursor.finished = True, completion.finished()
    cursor.text_len, cursor.num_tokens = len(completion.text), len(completion.token_ids)
    return CompletionChoice(index=index, text=text, logprobs=block, finish_reason=completion.finish_reason,
                            stop_reason=completion.stop_reason)
