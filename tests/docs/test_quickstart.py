"""Runs every shell and Python block of docs/quickstart.md, in order, as a reader would.

A block that starts `tokenmill serve` is the reader's second terminal: it is started in the
background, on a free port instead of 8000, and the later blocks talk to it through that port.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

QUICKSTART = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(QUICKSTART.read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(code: str, cwd: Path) -> subprocess.Popen:
    log = open(cwd / "serve.log", "w")
    process = subprocess.Popen(["bash", "-c", "exec " + code.strip()], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    port = re.search(r"--port (\d+)", code).group(1)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, (cwd / "serve.log").read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("the quick start's server never became healthy")


def _run(kind: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_the_quickstart_has_shell_and_python_blocks():
    kinds = [kind for kind, _ in blocks()]
    assert kinds.count("bash") >= 4 and kinds.count("python") >= 2


@pytest.mark.slow
def test_every_quickstart_block_runs(tmp_path):
    port = str(_free_port())
    server = None
    outputs = []
    try:
        for kind, code in blocks():
            code = code.replace("8000", port)
            if kind == "bash" and code.lstrip().startswith("tokenmill serve"):
                server = _start_server(code, tmp_path)
                continue
            done = _run(kind, code, tmp_path)
            assert done.returncode == 0, f"{kind} block failed:\n{code}\n--- stderr:\n{done.stderr[-3000:]}"
            outputs.append(done.stdout)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    assert server is not None, "the quick start starts no server"
    assert "Paris" in outputs[0]  # the first block: the capital of France
    assert any("Successful requests:" in out for out in outputs)  # the benchmark's summary
