"""ServerState: what every route needs (engine, tokenizer, limits, metrics, keys), kept on app.state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request

from tokenmill.engine.async_engine import AsyncEngine
from tokenmill.server.admission import Admission
from tokenmill.server.error_handlers import ApiError
from tokenmill.server.limits import ServerLimits
from tokenmill.server.metrics import ServerMetrics
from tokenmill.server.rate_limit import RateLimiter
from tokenmill.server.template_sandbox import TemplateSandbox

T = TypeVar("T")


@dataclass(slots=True)
class ServerState:
    """One server's shared objects; routes read it through `get_state(request)`."""

    engine: AsyncEngine  # or an EngineCoreClient (the engine core in its own process): the same interface
    tokenizer: Any  # the server's own copy: the step loop uses the engine's, and neither is thread-safe
    served_model_names: list[str]
    max_model_len: int
    metrics: ServerMetrics
    api_key: str | None = None
    metrics_api_key: str | None = None
    shutdown_grace_s: float = 10.0
    limits: ServerLimits = field(default_factory=ServerLimits)
    trust_request_chat_template: bool = False
    max_prompt_chars: int = 0  # no text longer than this can fit the context (set by build_state)
    admission: Admission = None  # type: ignore[assignment]  # set in __post_init__
    template_sandbox: TemplateSandbox | None = None  # started when request templates are trusted
    rate_limiter: RateLimiter | None = None  # --rate-limit: per-key request rate, off by default
    tool_call_parser: str | None = None  # --tool-call-parser: reads tool calls for tool_choice "auto"
    reasoning_parser: str | None = None  # --reasoning-parser: splits <think> into reasoning_content
    # One thread does all of the server's tokenizer work, off the event loop and never two at once.
    _tokenizer_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="tokenmill-tokenizer"))

    def __post_init__(self) -> None:
        if self.admission is None:
            self.admission = Admission(self.limits)
        if self.trust_request_chat_template and self.template_sandbox is None:
            self.start_template_sandbox()
        if hasattr(type(self.tokenizer), "prefetch"):  # a FastTokenizer: chat templates need transformers'
            self.tokenizer.prefetch()

    @property
    def model_name(self) -> str:
        """The name responses carry in their `model` field."""
        return self.served_model_names[0]

    def check_model(self, name: str | None) -> None:
        """Refuse a request for a model this server does not serve (404, as OpenAI)."""
        if name is not None and name not in self.served_model_names:
            served = ", ".join(self.served_model_names)
            raise ApiError(404, f"the model `{name}` does not exist; this server serves: {served}",
                           param="model", code="model_not_found")

    def check_text_length(self, text: str, param: str) -> None:
        """Refuse text too long to fit the context before any tokenizer spends time on it."""
        if len(text) > self.max_prompt_chars:
            raise ApiError(400, f"{param} is {len(text)} characters; no text over {self.max_prompt_chars} "
                                f"characters fits this model's context of {self.max_model_len} tokens (its "
                                f"longest token is {self.max_prompt_chars // self.max_model_len} characters); "
                                f"shorten it", param=param)

    async def in_tokenizer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run tokenizer work on the server's tokenizer thread, so the event loop keeps serving."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer_thread, fn, *args)

    async def encode(self, text: str, *, add_special_tokens: bool, param: str) -> list[int]:
        """Token ids of `text`, length-checked first and tokenized off the event loop."""
        self.check_text_length(text, param)
        return await self.in_tokenizer_thread(
            lambda: self.tokenizer(text, add_special_tokens=add_special_tokens).input_ids)

    def start_template_sandbox(self) -> None:
        self.template_sandbox = TemplateSandbox(timeout_s=self.limits.chat_template_timeout_s,
                                                max_chars=self.max_prompt_chars or 1 << 24)

    def close(self) -> None:
        """Stop the helpers this state started (the engine is stopped by the app's lifespan)."""
        if self.template_sandbox is not None:
            self.template_sandbox.close()
        self._tokenizer_thread.shutdown(wait=False, cancel_futures=True)


def get_state(request: Request) -> ServerState:
    return request.app.state.tokenmill


def longest_token_chars(tokenizer: Any) -> int:
    """Characters of the vocabulary's longest token (added tokens included), at least 1.

    A text of more than max_model_len times this many characters cannot tokenize into
    max_model_len tokens or fewer (normalizers that delete characters aside).
    """
    vocab = tokenizer.get_vocab()
    return max(1, max((len(token) for token in vocab), default=1))


def decode_releasing_gil(tokenizer: Any, ids: list[int]) -> str:
    """tokenizer.decode(ids) through the Rust batch call, which lets other threads run meanwhile
    (the single-sequence decode holds the GIL: ~36 ms for 200k tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer.decode(ids)
    text = backend.decode_batch([ids], skip_special_tokens=False)[0]
    if getattr(tokenizer, "clean_up_tokenization_spaces", False):
        text = tokenizer.clean_up_tokenization(text)
    return text
