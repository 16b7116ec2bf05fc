"""The engine core in its own process (`tokenmill serve`'s default): disconnects, and either process dying."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tokenmill.config import EngineArgs
from tokenmill.server.app import build_process_state, create_app
from tokenmill.server.launch import make_server

ENGINE_EXIT_BOUND_S = 15.0  # the API server must be gone this long after its engine process died
ORPHAN_BOUND_S = 10.0  # the engine process must be gone this long after its API server was killed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def split_server():
    """An in-test uvicorn server whose engine core runs in a child process."""
    args = EngineArgs(dtype="float32", max_model_len=512, kv_cache_memory=96 * 2**20, max_num_seqs=64)
    state = build_process_state(args, served_model_name="m", shutdown_grace_s=1.0, log_level="warning")
    port = _free_port()
    server = make_server(create_app(state), host="127.0.0.1", port=port, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", state
    server.should_exit = True
    thread.join(30)
    assert not thread.is_alive(), "the test server did not stop"
    assert state.engine._proc.returncode == 0, "the engine process did not exit cleanly with the server"


async def _stream(client: httpx.AsyncClient, url: str, index: int, leave_after: int | None) -> tuple[int, str | None]:
    """Stream one completion; leave after `leave_after` chunks. Returns (chunks read, finish reason)."""
    body = {"model": "m", "prompt": f"Story number {index}:", "max_tokens": 24, "temperature": 0, "stream": True,
            "ignore_eos": True}
    chunks, reason = 0, None
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            chunks += 1
            reason = choice.get("finish_reason") or reason
            if leave_after is not None and chunks >= leave_after:
                return chunks, None  # leaving the block closes the connection: a disconnect
    return chunks, reason


def _stats(state):
    return state.engine.latest_stats


def test_48_streams_with_a_third_leaving_early_free_every_block(split_server):
    url, state = split_server

    async def run():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(_stream(client, url, i, 2 if i % 3 == 0 else None) for i in range(48)))

    results = asyncio.run(run())
    stayed = [r for i, r in enumerate(results) if i % 3]
    assert len(stayed) == 32 and all(reason == "length" for _, reason in stayed), stayed
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = _stats(state)
        if stats.num_running == 0 and stats.num_waiting == 0 and stats.num_free_blocks == stats.num_total_blocks:
            break
        time.sleep(0.05)
    stats = _stats(state)
    assert (stats.num_running, stats.num_waiting) == (0, 0)
    assert stats.num_free_blocks == stats.num_total_blocks, "a disconnected stream kept its KV blocks"
    assert stats.num_aborted_total >= 16
    metrics = httpx.get(url + "/metrics").text  # the engine's counters cross the process boundary
    assert "tokenmill:kv_cache_free_blocks" in metrics and "tokenmill:time_to_first_token_seconds_count" in metrics


def _serve(port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tokenmill.cli.main", "serve", "--port", str(port), "--dtype", "float32",
           "--max-model-len", "512", "--kv-cache-memory", "32MiB", "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _engine_pid(proc: subprocess.Popen) -> int:
    children = _children(proc.pid)
    assert len(children) == 1, f"expected one engine process under the server, found {children}"
    return children[0]


@pytest.mark.slow
def test_killing_the_engine_process_gives_503_then_the_server_exits():
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(port)
    try:
        engine = _engine_pid(proc)
        os.kill(engine, signal.SIGKILL)
        killed = time.monotonic()
        saw_503 = False
        while proc.poll() is None and time.monotonic() - killed < ENGINE_EXIT_BOUND_S:
            try:
                response = httpx.get(url + "/health", timeout=2)
                if response.status_code == 503:
                    saw_503 = True
                    assert "engine-core process" in response.json()["error"]["message"]
            except httpx.TransportError:
                pass  # the server is already closing its socket
            time.sleep(0.05)
        code = proc.wait(max(0.1, ENGINE_EXIT_BOUND_S - (time.monotonic() - killed)))
        log = proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert saw_503, "/health never answered 503 after the engine died"
    assert code == 1, log
    assert "exited unexpectedly (killed by SIGKILL)" in log, log


@pytest.mark.slow
def test_killing_the_api_server_takes_the_engine_process_with_it():
    port = _free_port()
    proc = _serve(port)
    engine = _engine_pid(proc)
    try:
        assert _children(engine) == [], "the engine process has children of its own"
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + ORPHAN_BOUND_S
        while _alive(engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(engine), f"the engine process {engine} outlived its API server: an orphan"
    finally:
        if _alive(engine):
            os.kill(engine, signal.SIGKILL)
