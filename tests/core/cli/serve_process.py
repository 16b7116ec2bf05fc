"""Starts and stops a real `tokenmill serve` process on 127.0.0.1, with its log captured in a file."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class ServeProcess:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(tmp_path: Path, *flags: str, timeout: float = 240.0) -> ServeProcess:
    """Start `tokenmill serve` on a free port with the default model; wait until /health answers 200."""
    port = _free_port()
    log_path = tmp_path / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "tokenmill.cli.main", "serve", "--port", str(port), "--dtype", "float32",
           "--kv-cache-memory", "64MiB", "--max-model-len", "1024", *flags]
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = ServeProcess(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tokenmill serve exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise AssertionError(f"tokenmill serve did not become healthy:\n{server.log()}")


def stop_serve(server: ServeProcess) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
