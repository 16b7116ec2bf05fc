"""Render chat messages through a chat template into prompt token ids, off the event loop.

The model's own template renders on the server's tokenizer thread. A template sent in the
request (`chat_template_kwargs.chat_template`) is code from the client: it is refused unless the
server runs with --trust-request-chat-template, and even then it renders in the TemplateSandbox's
child processes, killed past --chat-template-timeout.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from tokenmill.server.error_handlers import ApiError
from tokenmill.server.protocol import ChatMessage
from tokenmill.server.template_sandbox import SandboxBusy, TemplateFailed, TemplateTimeout

if TYPE_CHECKING:
    from tokenmill.server.state import ServerState

_TEMPLATE_PARAM = "chat_template_kwargs.chat_template"


def _text_of(content: str | list[dict[str, Any]] | None, index: int) -> str | None:
    if content is None or isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise ApiError(400, f"messages[{index}].content: only text parts are supported, got type "
                                f"{part.get('type')!r}; send {{\"type\": \"text\", \"text\": ...}}", param="messages")
        texts.append(part["text"])
    return "\n".join(texts)


def message_dicts(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Plain dicts for the template, with list-of-parts content flattened to text."""
    if not messages:
        raise ApiError(400, "messages must hold at least one message", param="messages")
    out = []
    for i, message in enumerate(messages):
        item = message.model_dump(exclude_none=True)
        item["content"] = _text_of(message.content, i) or ""
        _arguments_as_objects(item)
        out.append(item)
    return out


def _arguments_as_objects(item: dict[str, Any]) -> None:
    """An assistant message's tool_calls with each function's arguments as an object, not JSON text:
    OpenAI clients send the text, and chat templates (Qwen's, Llama's) write `arguments | tojson`."""
    for call in item.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            try:
                fn["arguments"] = json.loads(fn["arguments"])
            except json.JSONDecodeError:
                pass  # left as text: the template decides what to do with it


async def render_chat(state: ServerState, messages: list[ChatMessage], *, add_generation_prompt: bool = True,
                      continue_final_message: bool = False, extra: dict[str, Any] | None = None) -> list[int]:
    """Token ids of the conversation as the template renders it (no extra BOS added)."""
    extra = dict(extra or {})
    template = extra.pop("chat_template", None)
    if continue_final_message and add_generation_prompt:
        add_generation_prompt = False  # continuing the last message and opening a new one contradict
    dicts = message_dicts(messages)
    state.check_text_length("".join(m["content"] for m in dicts), "messages")
    options = {"add_generation_prompt": add_generation_prompt, "continue_final_message": continue_final_message}
    if template is None:
        text = await state.in_tokenizer_thread(_render_own, state.tokenizer, dicts, {**options, **extra})
    else:
        text = await _render_requested(state, template, dicts, {**options, **extra})
    state.check_text_length(text, "messages")  # the rendered conversation, before tokenizing it
    return await state.encode(text, add_special_tokens=False, param="messages")


def _render_own(tokenizer: Any, dicts: list[dict[str, Any]], options: dict[str, Any]) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ApiError(400, "this model has no chat template; use /v1/completions with a plain prompt")
    try:
        return tokenizer.apply_chat_template(dicts, tokenize=False, **options)
    except Exception as exc:  # jinja raises for conversations the template forbids
        raise ApiError(400, f"the chat template refused these messages: {exc}", param="messages") from None


async def _render_requested(state: ServerState, template: Any, dicts: list[dict[str, Any]],
                            options: dict[str, Any]) -> str:
    if not state.trust_request_chat_template:
        raise ApiError(400, "chat templates sent in the request are refused: a template is code, and this server "
                            "does not run code from clients; remove chat_template from chat_template_kwargs, or "
                            "start the server with --trust-request-chat-template", param=_TEMPLATE_PARAM)
    if not isinstance(template, str) or not template:
        raise ApiError(400, "chat_template must be a non-empty string of Jinja", param=_TEMPLATE_PARAM)
    sandbox = state.template_sandbox
    kwargs = {**_special_tokens(state.tokenizer), **options}
    try:
        return await asyncio.to_thread(sandbox.render, template, dicts, kwargs)
    except TemplateTimeout:
        raise ApiError(400, f"the request's chat template did not finish rendering within "
                            f"{sandbox.timeout_s:g} s and was stopped; simplify it", param=_TEMPLATE_PARAM) from None
    except TemplateFailed as exc:
        raise ApiError(400, f"the request's chat template failed: {exc}", param=_TEMPLATE_PARAM) from None
    except SandboxBusy:
        raise ApiError(503, f"every chat-template sandbox process stayed busy for {sandbox.timeout_s:g} s; retry "
                            f"shortly", code="server_busy", headers={"Retry-After": "1"}) from None


def _special_tokens(tokenizer: Any) -> dict[str, Any]:
    """bos_token, eos_token, ... as apply_chat_template passes them to a template."""
    return {k: v for k, v in getattr(tokenizer, "special_tokens_map", {}).items() if isinstance(v, (str, list))}
