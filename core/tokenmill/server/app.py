"""Assemble the FastAPI app: state, routes, error handlers, the OpenAPI schema and the engine's lifetime."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

import tokenmill
from tokenmill.engine.async_engine import AsyncEngine
from tokenmill.loaders.default_model import DEFAULT_MODEL_NAME
from tokenmill.server.auth import validate_key
from tokenmill.server.error_handlers import install_error_handlers
from tokenmill.server.limits import ServerLimits
from tokenmill.server.metrics import ServerMetrics
from tokenmill.server.rate_limit import RateLimiter
from tokenmill.server.routes import chat, chat_page, completions, info, responses, tokens
from tokenmill.server.state import ServerState, longest_token_chars

if TYPE_CHECKING:
    from tokenmill.config import EngineArgs
    from tokenmill.engine.core import EngineCore


def build_state(core: EngineCore, *, served_model_name: str | list[str] | None = None, api_key: str | None = None,
                shutdown_grace_s: float = 10.0, metrics_api_key: str | None = None,
                limits: ServerLimits | None = None, trust_request_chat_template: bool = False,
                rate_limit: tuple[float, int] | None = None, metric_names: str = "tokenmill") -> ServerState:
    """Start an AsyncEngine over `core` with metrics attached, and gather what the routes need.

    An empty key is refused (ValueError): it would silently turn authentication off.
    `rate_limit` is (requests per second, burst) per API key, or None for no limit. `metric_names`
    is "tokenmill" or "vllm" (the metrics vLLM also has take `vllm:` names); every metric carries
    the first served name as its `model_name` label.
    """
    limiter = _check_keys_and_rate(api_key, metrics_api_key, rate_limit)
    names = _served_names(served_model_name, core.model_name)
    metrics = ServerMetrics(model_name=names[0], naming=metric_names)
    engine = AsyncEngine(core, listener=metrics)
    return _state(engine, core.tokenizer, core.max_model_len, metrics, limiter, names, api_key=api_key,
                  shutdown_grace_s=shutdown_grace_s, metrics_api_key=metrics_api_key, limits=limits,
                  trust_request_chat_template=trust_request_chat_template)


def build_process_state(args: EngineArgs, *, served_model_name: str | list[str] | None = None,
                        api_key: str | None = None, shutdown_grace_s: float = 10.0,
                        metrics_api_key: str | None = None, limits: ServerLimits | None = None,
                        trust_request_chat_template: bool = False, rate_limit: tuple[float, int] | None = None,
                        metric_names: str = "tokenmill", log_level: str = "info") -> ServerState:
    """As build_state, with the engine core started in its own process (EngineCoreClient) from `args`."""
    from tokenmill.engine.core_client import EngineCoreClient

    limiter = _check_keys_and_rate(api_key, metrics_api_key, rate_limit)  # before the engine starts
    names = _served_names(served_model_name, args.model or DEFAULT_MODEL_NAME)  # EngineCore's own default
    metrics = ServerMetrics(model_name=names[0], naming=metric_names)
    engine = EngineCoreClient(args, listener=metrics, log_level=log_level)
    return _state(engine, engine.tokenizer, engine.max_model_len, metrics, limiter, names, api_key=api_key,
                  shutdown_grace_s=shutdown_grace_s, metrics_api_key=metrics_api_key, limits=limits,
                  trust_request_chat_template=trust_request_chat_template)


def _check_keys_and_rate(api_key: str | None, metrics_api_key: str | None,
                         rate_limit: tuple[float, int] | None) -> RateLimiter | None:
    validate_key(api_key, "--api-key")
    validate_key(metrics_api_key, "--metrics-api-key")
    return RateLimiter(*rate_limit) if rate_limit else None  # a bad rate fails before the engine starts


def _served_names(served_model_name: str | list[str] | None, model_name: str) -> list[str]:
    if served_model_name is None:
        return [model_name]
    return [served_model_name] if isinstance(served_model_name, str) else list(served_model_name)


def _state(engine: Any, tokenizer: Any, max_model_len: int, metrics: ServerMetrics, limiter: RateLimiter | None,
           names: list[str], *, limits: ServerLimits | None, **settings: Any) -> ServerState:
    metrics.watch_engine(lambda: engine.latest_stats)
    tokenizer = copy.deepcopy(tokenizer)
    return ServerState(engine=engine, tokenizer=tokenizer, served_model_names=names, max_model_len=max_model_len,
                       metrics=metrics, limits=limits or ServerLimits(),
                       max_prompt_chars=max_model_len * longest_token_chars(tokenizer), rate_limiter=limiter,
                       **settings)


def create_app(state: ServerState) -> FastAPI:
    """The OpenAI-compatible app; its lifespan stops the engine loop when the server stops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.engine.shutdown(grace_s=0.0)  # a signal already drained; this aborts any stragglers
        state.close()

    app = FastAPI(title="tokenmill", version=tokenmill.__version__, lifespan=lifespan)
    app.state.tokenmill = state
    install_error_handlers(app)
    for router in (completions.router, chat.router, responses.router, tokens.router, info.router, info.open_router,
                   info.metrics_router, chat_page.router):
        app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without the 422 it adds to every route with a body: this server answers 400."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema
