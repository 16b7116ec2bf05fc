"""GET /v1/models, /health, /version and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

import tokenmill
from tokenmill.server.auth import require_api_key
from tokenmill.server.error_handlers import error_response
from tokenmill.server.protocol import ModelCard, ModelList
from tokenmill.server.state import get_state

router = APIRouter()


@router.get("/v1/models", dependencies=[Depends(require_api_key)])
async def list_models(raw: Request) -> ModelList:
    state = get_state(raw)
    return ModelList(data=[ModelCard(id=name, max_model_len=state.max_model_len) for name in state.served_model_names])


@router.get("/health")
async def health(raw: Request) -> Response:
    engine = get_state(raw).engine
    if engine.is_running:
        return Response(status_code=200)
    return error_response(503, engine.dead_reason or "the server is shutting down")


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": tokenmill.__version__}


@router.get("/metrics")
async def metrics(raw: Request) -> Response:
    return Response(get_state(raw).metrics.render(), media_type=CONTENT_TYPE_LATEST)
