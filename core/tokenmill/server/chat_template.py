"""Render chat messages through the model's chat template into prompt token ids."""

from __future__ import annotations

from typing import Any

from tokenmill.server.error_handlers import ApiError
from tokenmill.server.protocol import ChatMessage


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
        out.append(item)
    return out


def render_chat(tokenizer: Any, messages: list[ChatMessage], *, add_generation_prompt: bool = True,
                continue_final_message: bool = False, extra: dict[str, Any] | None = None) -> list[int]:
    """Token ids of the conversation as the model's template renders it (no extra BOS added)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ApiError(400, "this model has no chat template; use /v1/completions with a plain prompt")
    if continue_final_message and add_generation_prompt:
        add_generation_prompt = False  # continuing the last message and opening a new one contradict
    try:
        text = tokenizer.apply_chat_template(
            message_dicts(messages), tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message, **(extra or {}))
    except ApiError:
        raise
    except Exception as exc:  # jinja raises for conversations the template forbids
        raise ApiError(400, f"the chat template refused these messages: {exc}", param="messages") from exc
    return tokenizer(text, add_special_tokens=False).input_ids
