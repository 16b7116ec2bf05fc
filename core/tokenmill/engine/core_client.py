"""EngineCoreClient: the API process's handle on an engine-core process, with AsyncEngine's interface.

The server talks to it exactly as to an AsyncEngine (`generate`, `abort`, `drain`, `shutdown`,
`is_running`, `dead_reason`, `latest_stats`), but the EngineCore runs in its own process
(tokenmill.engine.core_proc), so the model's steps never wait for this process's GIL (HTTP, JSON,
tokenizing, detokenizing) and the other way round.

Transport: pyzmq over ipc:// sockets in a private temporary folder, one PUSH socket for commands
and one PULL socket for outputs, with msgspec MessagePack frames (see wire.py). zmq keeps message
boundaries, queues while the peer is busy and costs a few microseconds a message; it is what vLLM
v1 uses between the same two processes. One receiver thread here decodes each step's message,
turns its deltas into RequestOutputs (output_processor.py) and hands them to each caller's event
loop in one call per loop. A watcher thread waits on the engine process: if it dies, every caller
gets EngineRequestFailed, `is_running` turns False (/health answers 503) and `on_dead` is called
(the server then exits).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import zmq

from tokenmill.engine import wire
from tokenmill.engine.async_engine import (AsyncEngine, EngineRequestFailed, EngineShuttingDown, RequestListener,
                                           _Stream)
from tokenmill.engine.output_processor import ClientRequest, TokenTexts
from tokenmill.errors import RequestError, TokenmillError
from tokenmill.outputs import RequestOutput
from tokenmill.sampling.params import SamplingParams

if TYPE_CHECKING:
    from tokenmill.config import EngineArgs

log = logging.getLogger(__name__)

_POLL_MS = 200  # how often the receiver thread looks up from its socket to check for a stop
_EXIT_WAIT_S = 10.0  # how long shutdown waits for the engine process before killing it


class EngineCoreClient:
    """Serve many concurrent requests from an EngineCore in a child process (see the module docstring)."""

    def __init__(self, args: EngineArgs, listener: RequestListener | None = None, *, log_level: str = "INFO",
                 startup_timeout_s: float = 1800.0) -> None:
        self.listener = listener
        self.on_dead: Callable[[str], None] | None = None  # called once, from a helper thread
        self.dead_reason: str | None = None
        self._closing = False
        self._stopping = False  # shutdown asked the engine to exit: its exit is no crash
        self._requests: dict[str, tuple[ClientRequest, _Stream]] = {}
        self._streams: dict[str, _Stream] = {}  # event-loop side: requests whose caller still listens
        self._lock = threading.Lock()  # the receiver's processing vs failing everyone on a crash
        self._send_lock = threading.Lock()  # zmq sockets are not thread-safe
        self._encoder = wire.command_codec()[0]
        self._folder = tempfile.mkdtemp(prefix="tokenmill-engine-")
        self._ctx = zmq.Context(io_threads=1)
        self._commands, self._replies = self._ctx.socket(zmq.PUSH), self._ctx.socket(zmq.PULL)
        for sock, name in ((self._commands, "in"), (self._replies, "out")):
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(f"ipc://{self._folder}/{name}")
        self._proc = _spawn(self._folder, {"engine_args": args, "log_level": log_level.upper()})
        try:
            ready = self._handshake(startup_timeout_s)
        except BaseException:
            self._kill()
            raise
        self.engine_pid: int = ready["pid"]
        self.model_name: str = ready["model_name"]
        self.max_model_len: int = ready["max_model_len"]
        self.num_blocks: int = ready["num_blocks"]
        self.tokenizer = ready["tokenizer"]  # the receiver thread's; callers get copies
        self._prompt_tokenizer = copy.deepcopy(self.tokenizer)  # for text prompts, on the caller's thread
        self.latest_stats = ready["stats"]
        self._texts = TokenTexts(self.tokenizer)
        self._receiver = threading.Thread(target=self._receive, name="tokenmill-engine-outputs", daemon=True)
        self._receiver.start()
        threading.Thread(target=self._watch, name="tokenmill-engine-watch", daemon=True).start()

    # ------------------------------------------------------------------ start-up

    def _handshake(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._replies.poll(_POLL_MS):
                frame = self._replies.recv()
                if frame[:1] == b"\x80":  # a pickle: the handshake
                    return pickle.loads(frame)
                message = wire.reply_codec()[1].decode(frame)
                raise TokenmillError(getattr(message, "reason", "the engine-core process failed to start"))
            code = self._proc.poll()
            if code is not None:
                raise TokenmillError(f"the engine-core process exited during start-up ({_describe(code)}); "
                                     "its log above says why")
            if time.monotonic() > deadline:
                raise TokenmillError(f"the engine-core process did not get ready in {timeout_s:.0f} s")

    # ------------------------------------------------------------------ caller side (event loop)

    @property
    def is_running(self) -> bool:
        """True while new requests are accepted and the engine process is alive."""
        return not self._closing and self.dead_reason is None and self._proc.poll() is None

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    async def generate(self, prompt: str | list[int], params: SamplingParams, request_id: str, *,
                       priority: int = 0) -> AsyncIterator[RequestOutput]:
        """As AsyncEngine.generate: cumulative outputs until finished; leaving early aborts the request."""
        if not self.is_running:
            raise EngineShuttingDown(self.dead_reason or "the server is shutting down; retry on another replica")
        if request_id in self._streams:
            raise RequestError(f"request id {request_id!r} is already in use; give each request a unique id")
        text, ids = self._prompt_ids(prompt)
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        self._streams[request_id] = stream
        self._requests[request_id] = (ClientRequest(request_id, text, ids, params, self.tokenizer), stream)
        done = False
        try:
            if self.dead_reason is not None:  # it died after the check above: nobody would answer
                raise EngineRequestFailed(self.dead_reason)
            self._send(wire.AddRequest(request_id, ids, params, priority))
            while not done:
                output = await AsyncEngine._next_output(stream)
                done = output.finished
                yield output
        except (RequestError, EngineRequestFailed, EngineShuttingDown):
            done = True  # the engine already dropped it (or never took it)
            self._requests.pop(request_id, None)
            raise
        finally:
            if self._streams.get(request_id) is stream:
                del self._streams[request_id]
            if not done:
                self._forget_and_abort(request_id)

    def _prompt_ids(self, prompt: str | list[int]) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            if not prompt:
                raise RequestError("the prompt is empty; send at least one character or token id")
            return prompt, self._prompt_tokenizer(prompt, add_special_tokens=True).input_ids
        return None, list(prompt)

    def abort(self, request_id: str, error: BaseException | None = None) -> None:
        """Abort a request and free its blocks; its caller gets `error` (or plain end of output)."""
        stream = self._streams.pop(request_id, None)
        if stream is not None and error is not None:
            stream.queue.put_nowait(error)
        self._forget_and_abort(request_id)

    def _forget_and_abort(self, request_id: str) -> None:
        with self._lock:
            known = self._requests.pop(request_id, None) is not None
        if known and self.dead_reason is None:
            self._send(wire.AbortRequests([request_id]))

    async def drain(self, grace_s: float) -> None:
        """Stop taking requests, let in-flight ones finish for `grace_s`, then abort the rest."""
        self._closing = True
        deadline = time.monotonic() + max(grace_s, 0.0)
        while self._streams and time.monotonic() < deadline and self.dead_reason is None:
            await asyncio.sleep(0.05)
        for request_id in list(self._streams):
            self.abort(request_id, EngineShuttingDown("the server shut down before this request finished"))
        await asyncio.sleep(0)

    async def shutdown(self, grace_s: float = 0.0) -> None:
        """Drain, then stop the engine process (killed if it does not exit in time); idempotent."""
        await self.drain(grace_s)
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Stop the engine process and this side's threads and sockets, without an event loop."""
        self._closing = True
        if not self._stopping:
            self._stopping = True
            if self._proc.poll() is None:
                self._send(wire.Shutdown())
            try:
                self._proc.wait(_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                log.error("the engine-core process did not exit in %.0f s; killing it", _EXIT_WAIT_S)
                self._kill()
            self._receiver.join(2.0)
            self._ctx.destroy(linger=0)
            shutil.rmtree(self._folder, ignore_errors=True)

    def _kill(self) -> None:
        self._stopping = True
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _send(self, command: Any) -> None:
        frame = self._encoder.encode(command)
        with self._send_lock:
            if not self._commands.closed:
                self._commands.send(frame, copy=False)

    # ------------------------------------------------------------------ receiver and watcher threads

    def _receive(self) -> None:
        decoder = wire.reply_codec()[1]
        while not self._stopping or self._proc.poll() is None:
            try:
                if not self._replies.poll(_POLL_MS):
                    continue
                messages = self._waiting_messages(decoder)
            except zmq.ZMQError:
                return  # the context was destroyed: shutting down
            dead = next((m for m in messages if isinstance(m, wire.EngineDead)), None)
            try:
                self._process([m for m in messages if isinstance(m, wire.EngineOutputs)])
            except Exception:  # noqa: BLE001  one bad message must not stop every stream
                log.exception("failed to process the engine's outputs")
            if dead is not None:
                self._die(dead.reason)
                return

    def _waiting_messages(self, decoder: Any) -> list[wire.Reply]:
        """Every message already queued (at least one): when this side falls behind the engine, the
        steps it missed are applied together and each request gets one output, not one per step."""
        messages = []
        while True:
            try:
                frame = self._replies.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return messages
            messages.append(decoder.decode(frame.buffer))

    def _process(self, messages: list[wire.EngineOutputs]) -> None:
        deliveries: dict[asyncio.AbstractEventLoop, list] = defaultdict(list)
        stops: dict[str, list[tuple[int, str]]] = defaultdict(list)
        touched: dict[str, tuple[ClientRequest, _Stream]] = {}
        now = time.monotonic()
        with self._lock:
            for message in messages:
                self._apply(message, touched, stops, deliveries)
            for request_id, (request, stream) in touched.items():
                if request_id not in self._requests:
                    continue  # failed after it progressed: the error is on its way
                output = request.to_output()
                if output.finished:
                    del self._requests[request_id]
                deliveries[stream.loop].append((stream, output))
                self._observe(stream, output, now)
        for request_id, hits in stops.items():
            self._send(wire.FinishSamples(request_id, [i for i, _ in hits], hits[0][1]))
        for loop, items in deliveries.items():
            _deliver_threadsafe(loop, items)

    def _apply(self, message: wire.EngineOutputs, touched: dict, stops: dict, deliveries: dict) -> None:
        """Fold one step's message into the requests' state (under the lock)."""
        requests = self._requests
        for failure in message.failed:
            entry = requests.pop(failure.request_id, None)
            if entry is not None:
                error = RequestError(failure.message) if failure.refused else EngineRequestFailed(failure.message)
                deliveries[entry[1].loop].append((entry[1], error))
        for lp in message.prompt_logprobs:
            entry = requests.get(lp.request_id)
            if entry is not None:
                entry[0].add_prompt_logprobs(lp.entries, self._texts)
        for delta in message.samples:
            entry = requests.get(delta.request_id)
            if entry is None:
                continue  # aborted here while the step ran
            hit = entry[0].apply(delta, self._texts)
            if hit is not None:
                stops[delta.request_id].append((delta.index, hit))
            touched[delta.request_id] = entry
        if message.stats is not None:
            self.latest_stats = message.stats

    def _observe(self, stream: _Stream, output: RequestOutput, now: float) -> None:
        if self.listener is None:
            return
        try:
            AsyncEngine._observe(self, stream, output, now)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001
            log.exception("request listener failed for %s", output.request_id)

    def _watch(self) -> None:
        code = self._proc.wait()
        if not self._stopping:
            self._die(f"the engine-core process (pid {self._proc.pid}) exited unexpectedly ({_describe(code)}); "
                      "restart the server")

    def _die(self, reason: str) -> None:
        with self._lock:
            if self.dead_reason is not None:
                return
            self.dead_reason = reason
            requests, self._requests = self._requests, {}
        log.error("%s; failing %d requests in flight", reason, len(requests))
        deliveries: dict[asyncio.AbstractEventLoop, list] = defaultdict(list)
        for _, stream in requests.values():
            deliveries[stream.loop].append((stream, EngineRequestFailed(reason)))
        for loop, items in deliveries.items():
            _deliver_threadsafe(loop, items)
        if self.on_dead is not None:
            try:
                self.on_dead(reason)
            except Exception:  # noqa: BLE001
                log.exception("the engine-death callback failed")


def _spawn(folder: str, settings: dict[str, Any]) -> subprocess.Popen:
    """Start the engine-core process; its stdin stays open as the lifeline (see core_proc)."""
    in_addr, out_addr = f"ipc://{folder}/in", f"ipc://{folder}/out"
    proc = subprocess.Popen([sys.executable, "-m", "tokenmill.engine.core_proc", in_addr, out_addr],
                            stdin=subprocess.PIPE, start_new_session=True)  # Ctrl-C reaches only the API
    # process, which then drains and stops the engine itself; the stdin lifeline covers a killed API process
    payload = pickle.dumps(settings)
    proc.stdin.write(struct.pack("<Q", len(payload)) + payload)
    proc.stdin.flush()
    return proc


def _deliver(items: list[tuple[_Stream, Any]]) -> None:
    for stream, item in items:
        stream.queue.put_nowait(item)


def _deliver_threadsafe(loop: asyncio.AbstractEventLoop, items: list) -> None:
    try:
        loop.call_soon_threadsafe(_deliver, items)
    except RuntimeError:
        pass  # that event loop is closed; nobody listens there any more


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
