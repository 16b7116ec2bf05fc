"""SIGTERM on a real `tokenmill serve` process: short requests finish, long ones end with an error event."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

GRACE_S = 5.0
LONG_TOKENS = 4000  # > 5 s even at 600 tok/s (a served single stream here: ~100-250), so it outlives the grace


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stream(url: str, body: dict, sink: dict, started: threading.Event) -> None:
    """Read a streamed completion, recording its data lines; set `started` at the first text chunk."""
    lines = []
    sink["lines"] = lines
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as response:
        sink["status"] = response.status_code
        for line in response.iter_lines():
            if line.startswith("data: "):
                lines.append(line[6:])
                if line != "data: [DONE]" and json.loads(line[6:]).get("choices"):
                    started.set()


@pytest.mark.slow
def test_sigterm_drains_then_aborts_and_exits():
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "tokenmill.cli.main", "serve", "--port", str(port), "--dtype", "float32",
           "--max-model-len", "4096", "--kv-cache-memory", "256MiB", "--shutdown-grace-period", str(GRACE_S),
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)

        short, long = {}, {}
        short_started, long_started = threading.Event(), threading.Event()
        long_body = {"prompt": "Write a long story.", "max_tokens": LONG_TOKENS, "ignore_eos": True, "stream": True}
        threads = [threading.Thread(target=_stream, args=(url, long_body, long, long_started)),
                   threading.Thread(target=_stream, args=(url, {"prompt": "Hi", "max_tokens": 10, "stream": True},
                                                          short, short_started))]
        threads[0].start()
        assert long_started.wait(60)
        threads[1].start()
        assert short_started.wait(60)  # both are in flight when the signal comes
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(url + "/health", timeout=2)
        started = time.monotonic()
        returncode = proc.wait(timeout=GRACE_S + 20)
        for thread in threads:
            thread.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert returncode == 0
    assert time.monotonic() - started < GRACE_S + 10
    # the short request finished normally within the grace period
    assert short["status"] == 200 and short["lines"][-1] == "[DONE]"
    assert json.loads(short["lines"][-2])["choices"][0]["finish_reason"] in ("stop", "length")
    # the long one was aborted after the grace period with a final error event
    assert long["status"] == 200 and long["lines"][-1] == "[DONE]"
    error = json.loads(long["lines"][-2])["error"]
    assert error["type"] == "service_unavailable" and "shut down" in error["message"]
