"""TemplateSandbox: request-supplied chat templates rendered in child processes killed past a deadline.

Why processes: Jinja's sandbox blocks escapes but not work; two nested `range(8000)` loops are
130 bytes and 64 million iterations, and a loop body need not call anything an operation counter
could hook. A Python thread cannot be stopped, and one spinning in Jinja still takes the GIL
from the event loop. A child process can be killed at the deadline, runs beside the event loop
on its own core, and carries a memory cap (RLIMIT_AS), so `"x" * 10**10` fails there, not here.
Children are started ahead of need and replaced when killed, so a render pays one pipe round
trip (about a millisecond), not the ~1 s a fresh interpreter takes.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 60.0
_WORKER_MEMORY_BYTES = 1 << 30  # address space of one child; Python and transformers' renderer use ~300 MB


class TemplateTimeout(Exception):
    """A template ran past the sandbox's deadline (its process was killed)."""


class TemplateFailed(Exception):
    """A template raised while rendering; the message says why."""


class SandboxBusy(Exception):
    """No renderer process came free within the deadline (all busy, or still starting)."""


class _Worker:
    """One child process speaking the template_worker line protocol."""

    def __init__(self, max_chars: int) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRANSFORMERS_VERBOSITY": "error"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tokenmill.server.template_worker", str(_WORKER_MEMORY_BYTES), str(max_chars)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self._buffer = b""
        try:
            ready = self._read_line(time.monotonic() + _START_TIMEOUT_S)
        except EOFError:
            ready = None
        if ready != b"ready":
            self.kill()
            raise RuntimeError("the chat-template sandbox process did not start")

    def render(self, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        self.proc.stdin.write(json.dumps(job).encode() + b"\n")
        self.proc.stdin.flush()
        line = self._read_line(deadline)
        if line is None:
            raise TemplateTimeout()
        return json.loads(line)

    def _read_line(self, deadline: float) -> bytes | None:
        """The next line of the child's stdout, or None if it does not come by `deadline`."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError("the sandbox process exited")  # its memory cap, or a kill
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()


class TemplateSandbox:
    """A small pool of renderer processes; `render` blocks, so call it from a worker thread.

    num_workers bounds how many request templates render at once; a render that finds none idle
    waits up to timeout_s for one, then gets its own timeout_s to render. `max_chars` caps the
    rendered text (longer cannot fit the context).
    """

    def __init__(self, *, timeout_s: float, max_chars: int, num_workers: int = 2) -> None:
        self.timeout_s, self.max_chars, self.num_workers = timeout_s, max_chars, num_workers
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        self._ready = threading.Event()
        self._closed = False
        for _ in range(num_workers):
            self._idle.put(None)  # a slot; its process starts in the background below
        threading.Thread(target=self._prestart, name="tokenmill-template-sandbox", daemon=True).start()

    def _prestart(self) -> None:
        slots = []
        for _ in range(self.num_workers):
            try:
                slots.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for slot in slots:
            self._idle.put(slot if slot is not None else self._start())
        self._ready.set()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the first processes have started; True when they have."""
        return self._ready.wait(timeout_s)

    def _start(self) -> _Worker | None:
        try:
            return _Worker(self.max_chars)
        except Exception:
            log.exception("could not start a chat-template sandbox process")
            return None

    def render(self, template: str, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> str:
        """The rendered conversation; raises TemplateTimeout past the deadline, TemplateFailed on error,
        SandboxBusy when no process comes free within the deadline."""
        worker = self._take()
        try:
            answer = worker.render({"template": template, "messages": messages, "kwargs": kwargs}, self.timeout_s)
        except TemplateTimeout:
            worker.kill()
            self._replace()  # in the background, off every request's clock
            raise
        except (OSError, EOFError, ValueError):
            worker.kill()
            self._replace()
            raise TemplateFailed("the chat-template sandbox process died while rendering (its memory cap?)") from None
        self._idle.put(worker)
        if "error" in answer:
            raise TemplateFailed(answer["error"])
        return answer["text"]

    def _take(self) -> _Worker:
        try:
            worker = self._idle.get(timeout=self.timeout_s)
        except queue.Empty:
            raise SandboxBusy() from None
        if worker is None or not worker.alive():
            worker = self._start()  # the slot's process never started or died idle: start it now
            if worker is None:
                self._idle.put(None)
                raise TemplateFailed("the chat-template sandbox could not start; see the server log")
        return worker

    def _replace(self) -> None:
        def start() -> None:
            worker = self._start()
            if self._closed and worker is not None:
                worker.kill()  # closed while it started
            else:
                self._idle.put(worker)

        threading.Thread(target=start, name="tokenmill-template-sandbox", daemon=True).start()

    def close(self) -> None:
        """Kill every idle child (busy ones end with the server: their stdin closes)."""
        self._closed = True
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            if worker is not None:
                worker.kill()
