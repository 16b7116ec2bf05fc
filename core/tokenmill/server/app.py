"""Assemble the FastAPI app: state, routes, error handlers, and the engine's lifetime."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

import tokenmill
from tokenmill.engine.async_engine import AsyncEngine
from tokenmill.server.error_handlers import install_error_handlers
from tokenmill.server.metrics import ServerMetrics
from tokenmill.server.routes import chat, chat_page, completions, info, tokens
from tokenmill.server.state import ServerState

if TYPE_CHECKING:
    from tokenmill.engine.core import EngineCore


def build_state(core: EngineCore, *, served_model_name: str | list[str] | None = None, api_key: str | None = None,
                shutdown_grace_s: float = 10.0) -> ServerState:
    """Start an AsyncEngine over `core` with metrics attached, and gather what the routes need."""
    metrics = ServerMetrics()
    engine = AsyncEngine(core, listener=metrics)
    metrics.watch_engine(lambda: engine.latest_stats)
    if served_model_name is None:
        names = [core.model_name]
    else:
        names = [served_model_name] if isinstance(served_model_name, str) else list(served_model_name)
    return ServerState(engine=engine, tokenizer=copy.deepcopy(core.tokenizer), served_model_names=names,
                       max_model_len=core.max_model_len, metrics=metrics, api_key=api_key or None,
                       shutdown_grace_s=shutdown_grace_s)


def create_app(state: ServerState) -> FastAPI:
    """The OpenAI-compatible app; its lifespan stops the engine loop when the server stops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.engine.shutdown(grace_s=0.0)  # a signal already drained; this aborts any stragglers

    app = FastAPI(title="tokenmill", version=tokenmill.__version__, lifespan=lifespan)
    app.state.tokenmill = state
    install_error_handlers(app)
    for module in (completions, chat, tokens, info, chat_page):
        app.include_router(module.router)
    return app
