"""AsyncEngine: one background thread steps an EngineCore while many asyncio callers stream outputs.

EngineCore is not thread-safe, so exactly one thread (the step loop) touches it. Callers on the
event loop talk to that thread through a command queue (add, abort) that the loop drains between
steps, and the loop hands outputs back through `loop.call_soon_threadsafe` into one asyncio queue
per request. Outputs are cumulative, so a slow consumer only ever sees the newest one.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tokenmill.errors import EngineDeadError, RequestError
from tokenmill.outputs import RequestOutput
from tokenmill.sampling.params import SamplingParams

if TYPE_CHECKING:
    from tokenmill.config import EngineArgs
    from tokenmill.engine.core import EngineCore

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.5  # how often an idle loop wakes to refresh its stats snapshot


class EngineRequestFailed(RuntimeError):
    """The engine failed while serving this request (not the caller's fault: an HTTP 500)."""


class EngineShuttingDown(RuntimeError):
    """The engine is draining or stopped and takes no new requests (an HTTP 503)."""


class RequestListener(Protocol):
    """Per-request timing events, called from the step-loop thread (metrics implement this)."""

    def on_first_token(self, ttft_s: float) -> None: ...

    def on_next_tokens(self, gap_s: float) -> None: ...

    def on_finished(self, e2e_s: float, finish_reason: str | None) -> None: ...


@dataclass(slots=True)
class _Stream:
    """One request's channel back to its caller, plus the timings the listener needs."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    arrival: float = field(default_factory=time.monotonic)
    last_token: float | None = None
    num_tokens: int = 0

    def put(self, item: RequestOutput | BaseException) -> None:
        """Hand an item to the caller's loop; safe from any thread, a no-op once that loop closed."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            pass  # the caller's event loop is gone; nobody is listening any more


class AsyncEngine:
    """Serve many concurrent requests from one EngineCore stepped in a background thread.

    `generate` is the only way in: it yields cumulative RequestOutputs until the request finishes,
    and aborts the request (freeing its KV blocks at once) if the caller stops early or is
    cancelled. A RequestError from the engine reaches the caller as that exception (an HTTP 400);
    any other failure while serving a request raises EngineRequestFailed for the requests it
    touched, and the loop keeps serving the others.
    """

    def __init__(self, engine: EngineCore, listener: RequestListener | None = None) -> None:
        self.engine = engine
        self.listener = listener
        self._commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._live: dict[str, _Stream] = {}  # step-loop thread only
        self._streams: dict[str, _Stream] = {}  # event-loop side: requests whose caller still listens
        self._closing = False
        self.dead_reason: str | None = None  # set if the step loop itself died
        self.latest_stats = None  # EngineStats snapshot, refreshed by the step loop
        self._refresh_stats()
        self._thread = threading.Thread(target=self._run, name="tokenmill-step-loop", daemon=True)
        self._thread.start()

    @classmethod
    def from_engine_args(cls, args: EngineArgs, listener: RequestListener | None = None) -> AsyncEngine:
        """Load the model into a new EngineCore and start its step loop."""
        from tokenmill.engine.core import EngineCore

        return cls(EngineCore(args), listener)

    # ------------------------------------------------------------------ caller side (event loop)

    @property
    def is_running(self) -> bool:
        """True while new requests are accepted and the step loop is alive."""
        return not self._closing and self.dead_reason is None and self._thread.is_alive()

    @property
    def num_in_flight(self) -> int:
        """Requests whose callers are still waiting for output."""
        return len(self._streams)

    async def generate(
        self, prompt: str | list[int], params: SamplingParams, request_id: str, *, priority: int = 0
    ) -> AsyncIterator[RequestOutput]:
        """Queue a request and yield its cumulative outputs; the last one has finished=True.

        Raises RequestError for a request the engine refuses, EngineRequestFailed when the engine
        fails while serving it, and EngineShuttingDown when no new requests are taken.
        """
        if not self.is_running:
            raise EngineShuttingDown(self.dead_reason or "the server is shutting down; retry on another replica")
        if request_id in self._streams:
            raise RequestError(f"request id {request_id!r} is already in use; give each request a unique id")
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        self._streams[request_id] = stream
        self._send(("add", request_id, prompt, params, priority, stream))
        done = False
        try:
            while not done:
                output = await self._next_output(stream)
                done = output.finished
                yield output
        except (RequestError, EngineRequestFailed, EngineShuttingDown):
            done = True  # the engine already dropped it (or never took it)
            raise
        finally:
            if self._streams.get(request_id) is stream:
                del self._streams[request_id]
            if not done:
                self._send(("abort", request_id))

    @staticmethod
    async def _next_output(stream: _Stream) -> RequestOutput:
        """The newest output waiting for this stream; raises the first error queued before it."""
        item = await stream.queue.get()
        while True:
            if isinstance(item, BaseException):
                raise item
            if item.finished or stream.queue.empty():
                return item
            item = stream.queue.get_nowait()

    def abort(self, request_id: str, error: BaseException | None = None) -> None:
        """Abort a request and free its blocks; its caller gets `error` (or plain end of output)."""
        stream = self._streams.pop(request_id, None)
        if stream is not None and error is not None:
            stream.queue.put_nowait(error)
        self._send(("abort", request_id))

    async def drain(self, grace_s: float) -> None:
        """Stop taking requests, let in-flight ones finish for `grace_s`, then abort the rest.

        Aborted callers get EngineShuttingDown, so a stream can end with a final error event.
        """
        self._closing = True
        deadline = time.monotonic() + max(grace_s, 0.0)
        while self._streams and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for request_id in list(self._streams):
            self.abort(request_id, EngineShuttingDown("the server shut down before this request finished"))
        await asyncio.sleep(0)  # let aborted callers run their final error handling

    async def shutdown(self, grace_s: float = 0.0) -> None:
        """Drain (see `drain`), then stop the step loop; idempotent.

        Returns within about grace_s + 5 s whatever the step loop is doing: it is a daemon thread,
        so a stuck step never holds the process.
        """
        await self.drain(grace_s)
        self._stop.set()
        self._wakeup.set()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)
        close = getattr(self.engine, "shutdown", None)  # a tensor-parallel engine's workers (bounded)
        if close is not None:
            await asyncio.get_running_loop().run_in_executor(None, close)

    def _send(self, command: tuple[Any, ...]) -> None:
        self._commands.put(command)
        self._wakeup.set()

    # ------------------------------------------------------------------ step-loop thread

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._drain_commands()
                if not self.engine.has_unfinished_requests():
                    self._check_engine()
                    self._refresh_stats()
                    self._wakeup.wait(_IDLE_WAIT_S)
                    self._wakeup.clear()
                    continue
                self._step_once()
            self._drain_commands()  # process the aborts a shutdown just sent
            self._fail_all(EngineShuttingDown("the server shut down before this request finished"))
            self._refresh_stats()
        except EngineDeadError as exc:  # the engine itself cannot go on (a tensor-parallel rank fell)
            self.dead_reason = str(exc)
            self._fail_all(EngineRequestFailed(self.dead_reason))
        except BaseException as exc:  # the loop itself broke: fail everyone, refuse new work
            log.exception("the engine step loop died")
            self.dead_reason = f"the engine step loop died ({type(exc).__name__}); restart the server"
            self._fail_all(EngineRequestFailed(self.dead_reason))

    def _check_engine(self) -> None:
        """While idle: raise EngineDeadError if the engine fell (engines without the check never do)."""
        check = getattr(self.engine, "check_health", None)
        if check is not None:
            check()

    def _drain_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command[0] == "add":
                self._add(*command[1:])
            else:
                self._abort(command[1])

    def _add(self, request_id: str, prompt: Any, params: SamplingParams, priority: int, stream: _Stream) -> None:
        try:
            self.engine.add_request(request_id, prompt, params, priority=priority)
        except RequestError as exc:
            stream.put(exc)
        except Exception:
            log.exception("engine failed to add request %s", request_id)
            stream.put(EngineRequestFailed("the engine failed to accept this request; see the server log"))
        else:
            self._live[request_id] = stream

    def _abort(self, request_id: str) -> None:
        if self._live.pop(request_id, None) is None:
            return  # already finished, failed or never added
        try:
            self.engine.abort_request(request_id)
        except Exception:
            log.exception("engine failed to abort request %s", request_id)

    def _step_once(self) -> None:
        try:
            outputs = self.engine.step()
        except EngineDeadError:
            raise  # ends the loop: every request fails and /health answers 503
        except Exception:
            log.exception("engine step failed; failing the %d requests in flight", len(self._live))
            self._fail_all(EngineRequestFailed("the engine failed while generating this request; see the server log"))
            time.sleep(0.01)  # a step that keeps failing must not spin the CPU
            return
        now = time.monotonic()
        for output in outputs:
            self._dispatch(output, now)
        self._refresh_stats()

    def _dispatch(self, output: RequestOutput, now: float) -> None:
        stream = self._live.get(output.request_id)
        if stream is None:
            return  # aborted while this step ran
        if output.finished:
            del self._live[output.request_id]
        stream.put(output)
        try:
            self._observe(stream, output, now)
        except Exception:
            log.exception("request listener failed for %s", output.request_id)

    def _observe(self, stream: _Stream, output: RequestOutput, now: float) -> None:
        if self.listener is None:
            return
        num_tokens = sum(len(c.token_ids) for c in output.outputs)
        if num_tokens > stream.num_tokens:
            if stream.last_token is None:
                self.listener.on_first_token(now - stream.arrival)
            else:
                self.listener.on_next_tokens(now - stream.last_token)
            stream.last_token, stream.num_tokens = now, num_tokens
        if output.finished:
            reasons = [c.finish_reason for c in output.outputs]
            self.listener.on_finished(now - stream.arrival, reasons[0] if reasons else None)

    def _fail_all(self, error: BaseException) -> None:
        live, self._live = self._live, {}
        for request_id, stream in live.items():
            try:
                self.engine.abort_request(request_id)
            except Exception:
                log.exception("engine failed to abort request %s", request_id)
            stream.put(error)

    def _refresh_stats(self) -> None:
        try:
            self.latest_stats = self.engine.stats()
        except Exception:
            log.exception("engine.stats() failed")
