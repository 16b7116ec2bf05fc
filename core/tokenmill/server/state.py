"""ServerState: what every route needs (engine, tokenizer, names, metrics, key), kept on app.state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from tokenmill.engine.async_engine import AsyncEngine
from tokenmill.server.error_handlers import ApiError
from tokenmill.server.metrics import ServerMetrics


@dataclass(slots=True)
class ServerState:
    """One server's shared objects; routes read it through `get_state(request)`."""

    engine: AsyncEngine
    tokenizer: Any  # the server's own copy: the step loop uses the engine's, and neither is thread-safe
    served_model_names: list[str]
    max_model_len: int
    metrics: ServerMetrics
    api_key: str | None = None
    shutdown_grace_s: float = 10.0

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


def get_state(request: Request) -> ServerState:
    return request.app.state.tokenmill
