"""GET /v1/models, /health, /version and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

import tokenmill
from tokenmill.server.error_handlers import error_response
from tokenmill.server.protocol import ERROR_RESPONSES, ErrorResponse, HealthStatus, ModelCard, ModelList
from tokenmill.server.request_guard import GuardedRoute, MetricsRoute, OpenRoute
from tokenmill.server.state import get_state

router = APIRouter(route_class=GuardedRoute, responses=ERROR_RESPONSES)
open_router = APIRouter(route_class=OpenRoute)
metrics_router = APIRouter(route_class=MetricsRoute)


@router.get("/v1/models")
async def list_models(raw: Request) -> ModelList:
    state = get_state(raw)
    return ModelList(data=[ModelCard(id=name, max_model_len=state.max_model_len) for name in state.served_model_names])


@open_router.get("/health", responses={503: {"model": ErrorResponse, "description": "Shutting down or failed"}})
async def health(raw: Request) -> HealthStatus:
    engine = get_state(raw).engine
    if engine.is_running:
        return HealthStatus()
    return error_response(503, engine.dead_reason or "the server is shutting down")


@open_router.get("/version")
async def version() -> dict[str, str]:
    return {"version": tokenmill.__version__}


@metrics_router.get("/metrics", response_class=Response,
                    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
                               401: {"model": ErrorResponse, "description": "Missing or wrong metrics key"}})
async def metrics(raw: Request) -> Response:
    return Response(get_state(raw).metrics.render(), media_type=CONTENT_TYPE_LATEST)
