"""POST /tokenize and /detokenize with the served model's tokenizer (vLLM's shapes), off the event loop."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tokenmill.server.chat_template import render_chat
from tokenmill.server.error_handlers import ApiError
from tokenmill.server.protocol import (ERROR_RESPONSES, DetokenizeRequest, DetokenizeResponse, TokenizeRequest,
                                       TokenizeResponse)
from tokenmill.server.request_guard import GuardedRoute
from tokenmill.server.state import decode_releasing_gil, get_state

router = APIRouter(route_class=GuardedRoute, responses=ERROR_RESPONSES)


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, raw: Request) -> TokenizeResponse:
    state = get_state(raw)
    state.check_model(body.model)
    if (body.prompt is None) == (body.messages is None):
        raise ApiError(400, "send exactly one of `prompt` or `messages`", param="prompt")
    if body.prompt is not None:
        ids = await state.encode(body.prompt, add_special_tokens=body.add_special_tokens, param="prompt")
    else:
        ids = await render_chat(state, body.messages, add_generation_prompt=body.add_generation_prompt)
    return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=state.max_model_len)


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, raw: Request) -> DetokenizeResponse:
    state = get_state(raw)
    state.check_model(body.model)
    vocab = len(state.tokenizer)
    bad = [t for t in body.tokens if not 0 <= t < vocab]
    if bad:
        raise ApiError(400, f"token ids {bad[:5]} are outside the vocabulary [0, {vocab})", param="tokens")
    text = await state.in_tokenizer_thread(decode_releasing_gil, state.tokenizer, body.tokens)
    return DetokenizeResponse(prompt=text)
