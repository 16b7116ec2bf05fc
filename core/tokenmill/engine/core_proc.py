"""The engine-core process: scheduling, the model and sampling, driven over zmq by the API process.

Started by `EngineCoreClient` as `python -m tokenmill.engine.core_proc IN OUT`, with its start-up
settings pickled on stdin. stdin stays open for the process's life: when it reaches end of file
the API process is gone (even killed with SIGKILL), and the engine exits at once, so it is never
left behind as an orphan. Commands arrive on a PULL socket (IN), outputs leave on a PUSH socket
(OUT); the first frame on OUT is the pickled handshake (or an EngineDead if start-up failed).

The loop drains every waiting command between steps, so an abort frees its blocks before the next
step is scheduled. It sends one EngineOutputs per step, carrying token-id deltas only: the API
process detokenizes, matches stop strings and adds logprob token texts.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import sys
import threading
import time
from typing import Any

import zmq

from tokenmill.engine import wire
from tokenmill.errors import RequestError
from tokenmill.startup_heap import freeze_startup_heap

log = logging.getLogger("tokenmill.engine_core")

_IDLE_POLL_MS = 1000  # an idle engine blocks on its socket this long between checks
_PARENT_GONE_EXIT = 3  # exit code when the API process disappeared


def main(argv: list[str]) -> int:
    in_addr, out_addr = argv
    settings = _read_settings(sys.stdin.buffer)
    logging.basicConfig(level=settings.get("log_level", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s[engine-core]: %(message)s")
    threading.Thread(target=_watch_parent, args=(sys.stdin.buffer,), name="tokenmill-parent-watch",
                     daemon=True).start()
    ctx = zmq.Context(io_threads=1)
    commands, replies = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    for sock in (commands, replies):
        sock.setsockopt(zmq.LINGER, 2000)
    commands.connect(in_addr)
    replies.connect(out_addr)
    encoder = wire.reply_codec()[0]
    try:
        core = _build_core(settings)
    except BaseException as exc:  # noqa: BLE001  start-up failed: say why, then exit
        log.exception("the engine failed to start")
        replies.send(encoder.encode(wire.EngineDead(f"the engine failed to start: {type(exc).__name__}: {exc}")))
        replies.close()
        ctx.term()
        return 1
    replies.send(pickle.dumps(_handshake(core)))
    freeze_startup_heap()
    # Built on the main thread, stepped on a second one, exactly as AsyncEngine does in process: on
    # the loaded 2-core box, stepping the CPU kernels on the thread that built the core measured
    # 20-70x slower per step than stepping them on another thread (cause not pinned down).
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(EngineLoop(core, commands, replies).run()),
                              name="tokenmill-engine-core")
    worker.start()
    worker.join()
    ctx.term()  # waits (up to the sockets' linger) until the last outputs are sent
    return result[0] if result else 1


def _read_settings(stream: Any) -> dict[str, Any]:
    (size,) = struct.unpack("<Q", stream.read(8))
    return pickle.loads(stream.read(size))


def _watch_parent(stream: Any) -> None:
    """Block on stdin; its end means the API process died: leave at once, freeing the device."""
    while stream.read(1 << 16):
        pass
    log.error("the API server process is gone; the engine-core process exits")
    os._exit(_PARENT_GONE_EXIT)


def _build_core(settings: dict[str, Any]):
    from tokenmill.engine.core import EngineCore

    return EngineCore(settings["engine_args"], detokenize=False)


def _handshake(core) -> dict[str, Any]:
    """What the API process needs to serve: the tokenizer (pickled once here) and the limits."""
    return {"pid": os.getpid(), "model_name": core.model_name, "max_model_len": core.max_model_len,
            "tokenizer": core.tokenizer, "num_blocks": core.num_blocks, "stats": core.stats()}


class EngineLoop:
    """Drain commands, step, send the deltas; one thread owns the core and both sockets."""

    def __init__(self, core: Any, commands: zmq.Socket, replies: zmq.Socket) -> None:
        self.core = core
        self.commands = commands
        self.replies = replies
        self.encoder = wire.reply_codec()[0]
        self.decoder = wire.command_codec()[1]
        self.live: set[str] = set()  # user requests the engine holds
        self.failed: list[wire.RequestFailed] = []
        self.stopping = False

    def run(self) -> int:
        try:
            while not self.stopping:
                changed = self._drain(block=not self.core.has_unfinished_requests())
                if self.core.has_unfinished_requests():
                    self._step()
                elif changed or self.failed:
                    self._send([], [])
            self._fail_all("the server shut down before this request finished")
            self._send([], [])
            return 0
        except BaseException as exc:  # the loop itself broke: tell the API process, then exit
            log.exception("the engine step loop died")
            reason = f"the engine step loop died ({type(exc).__name__}: {exc}); restart the server"
            try:
                self.replies.send(self.encoder.encode(wire.EngineDead(reason)))
            except Exception:  # noqa: BLE001
                pass
            return 1
        finally:
            self.replies.close()
            self.commands.close()

    def _drain(self, block: bool) -> bool:
        """Handle every waiting command; wait up to a second for the first if `block`."""
        handled = False
        if block and not self.commands.poll(_IDLE_POLL_MS):
            return False
        while True:
            try:
                frame = self.commands.recv(zmq.NOBLOCK)
            except zmq.Again:
                return handled
            self._handle(self.decoder.decode(frame))
            handled = True

    def _handle(self, command: wire.Command) -> None:
        core = self.core
        if isinstance(command, wire.AddRequest):
            self._add(command)
        elif isinstance(command, wire.AbortRequests):
            for request_id in command.request_ids:
                if request_id in self.live:
                    self.live.discard(request_id)
                    core.abort_request(request_id)
        elif isinstance(command, wire.FinishSamples):
            core.finish_samples(command.request_id, command.indices, command.stop_reason)
            if not core.has_request(command.request_id):
                self.live.discard(command.request_id)
        elif isinstance(command, wire.Shutdown):
            self.stopping = True

    def _add(self, command: wire.AddRequest) -> None:
        try:
            self.core.add_request(command.request_id, command.prompt_token_ids, command.params,
                                  priority=command.priority)
        except RequestError as exc:
            self.failed.append(wire.RequestFailed(command.request_id, str(exc), True))
        except Exception:  # noqa: BLE001
            log.exception("engine failed to add request %s", command.request_id)
            self.failed.append(wire.RequestFailed(command.request_id, "the engine failed to accept this request; "
                                                  "see the server log", False))
        else:
            self.live.add(command.request_id)

    def _step(self) -> None:
        try:
            deltas = self.core.step_deltas()
        except Exception:  # noqa: BLE001  fail what is in flight, keep serving
            log.exception("engine step failed; failing the %d requests in flight", len(self.live))
            self._fail_all("the engine failed while generating this request; see the server log")
            self._send([], [])
            time.sleep(0.01)  # a step that keeps failing must not spin the CPU
            return
        for request_id in deltas.done:
            self.live.discard(request_id)
        self._send(deltas.samples, deltas.prompt_logprobs)

    def _fail_all(self, message: str) -> None:
        for request_id in self.live:
            try:
                self.core.abort_request(request_id)
            except Exception:  # noqa: BLE001
                log.exception("engine failed to abort request %s", request_id)
            self.failed.append(wire.RequestFailed(request_id, message, False))
        self.live.clear()

    def _send(self, samples: list, prompt_logprobs: list) -> None:
        failed, self.failed = self.failed, []
        message = wire.EngineOutputs(samples, prompt_logprobs, failed, self.core.stats())
        self.replies.send(self.encoder.encode(message), copy=False)


if __name__ == "__main__":
    _code = main(sys.argv[1:])
    logging.shutdown()
    os._exit(_code)  # not sys.exit: the parent-watch thread is blocked reading stdin
