"""Run the app under uvicorn with a graceful shutdown: SIGTERM drains in-flight requests, then exits."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from tokenmill.server.state import ServerState

log = logging.getLogger(__name__)
_BACKSTOP_S = 5.0  # beyond the grace period, uvicorn cancels whatever is still running
_DEAD_ENGINE_LINGER_S = 1.0  # /health answers 503 this long after the engine process died, then the server exits


class GracefulServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains the engine for the grace period.

    uvicorn stops accepting connections at once; the engine lets in-flight requests finish for
    `grace_s`, then aborts the rest, whose streams end with an error event. A second SIGINT forces
    an immediate exit, and uvicorn's own timeout (grace + 5 s) guarantees the process never hangs.
    """

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Future | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
            return
        self.should_exit = True
        if self._loop is not None and self._drain is None:
            log.info("shutting down: draining in-flight requests for up to %.1f s", self.state.shutdown_grace_s)
            self._loop.call_soon_threadsafe(self._start_drain)

    def engine_died(self, reason: str) -> None:
        """The engine-core process is gone: answer 503 for a moment (so probes see why), then exit."""
        log.error("the engine is gone (%s); the server exits in %.0f s", reason, _DEAD_ENGINE_LINGER_S)
        timer = threading.Timer(_DEAD_ENGINE_LINGER_S, self.handle_exit, (signal.SIGTERM, None))
        timer.daemon = True
        timer.start()

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.ensure_future(self.state.engine.drain(self.state.shutdown_grace_s))


def make_server(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> GracefulServer:
    """A GracefulServer for `app` (built by create_app); call `.run()` or `await .serve()`."""
    state: ServerState = app.state.tokenmill
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=int(state.shutdown_grace_s + _BACKSTOP_S),
                            timeout_keep_alive=5)
    server = GracefulServer(config, state)
    if hasattr(state.engine, "on_dead"):  # the engine core runs in its own process
        state.engine.on_dead = server.engine_died
    return server
