"""A tensor-parallel rank that dies or hangs ends the engine with a clear error, in bounded time.

Rank 1 is a real spawned process, killed (SIGKILL) or frozen (SIGSTOP) mid-generation. The
engine must name rank 1, fail the requests in flight, refuse later ones at once, and a server
over it must answer /health with 503 from then on.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time

import httpx
import pytest
import torch.distributed

from tokenmill.errors import EngineDeadError, TokenmillError
from tokenmill.sampling.params import SamplingParams
from tokenmill.server.app import build_state, create_app
from tokenmill.server.launch import make_server

LONG = SamplingParams(max_tokens=100, temperature=0.0, ignore_eos=True)


def _signal_soon(pid: int, sig: int, delay_s: float) -> dict[str, float]:
    """Send `sig` to `pid` after `delay_s` on a thread; the returned dict gets the send time as 'at'."""
    sent: dict[str, float] = {}

    def fire() -> None:
        time.sleep(delay_s)
        sent["at"] = time.monotonic()
        os.kill(pid, sig)

    threading.Thread(target=fire, daemon=True).start()
    return sent


def _run_until_error(engine) -> tuple[BaseException, float]:
    for i in range(4):
        engine.add_request(str(i), "a prompt for a long generation", LONG)
    try:
        while engine.has_unfinished_requests():
            engine.step()
    except EngineDeadError as exc:
        return exc, time.monotonic()
    pytest.fail("the generation finished although rank 1 was killed")


def test_a_killed_rank_ends_the_engine_naming_it(tp_model_dirs, make_tp_engine):
    engine = make_tp_engine(tp_model_dirs["kv2"], tensor_parallel_size=2, max_model_len=256)
    pid = engine.executor.worker_pids()[1]
    sent = _signal_soon(pid, signal.SIGKILL, 0.5)
    error, at = _run_until_error(engine)
    assert at - sent["at"] < 10.0  # the bound: gloo sees the closed connection at once
    assert "rank 1" in str(error) and f"pid {pid}" in str(error) and "signal 9" in str(error)
    started = time.monotonic()
    with pytest.raises(EngineDeadError, match="rank 1"):
        engine.step()  # refused at once, no collective attempted
    assert time.monotonic() - started < 1.0


def test_a_frozen_rank_times_out_naming_it(tp_model_dirs, make_tp_engine, monkeypatch):
    monkeypatch.setenv("TOKENMILL_COLLECTIVE_TIMEOUT_S", "2")
    engine = make_tp_engine(tp_model_dirs["kv2"], tensor_parallel_size=2, max_model_len=256)
    pid = engine.executor.worker_pids()[1]
    sent = _signal_soon(pid, signal.SIGSTOP, 0.5)
    try:
        error, at = _run_until_error(engine)
    finally:
        _kill_quietly(pid)
    assert at - sent["at"] < 2 + 15.0  # the timeout, the diagnosis, the bounded stop (kill)
    assert "rank(s) 1 did not answer" in str(error)
    assert not _alive(pid)


def test_a_rank_frozen_between_steps_times_out(tp_model_dirs, make_tp_engine, monkeypatch):
    """Frozen while idle: gloo's root waits for the receiver before it finishes a send, so the
    driver's step broadcast itself must time out (it once waited forever here)."""
    monkeypatch.setenv("TOKENMILL_COLLECTIVE_TIMEOUT_S", "2")
    engine = make_tp_engine(tp_model_dirs["kv2"], tensor_parallel_size=2, max_model_len=256)
    pid = engine.executor.worker_pids()[1]
    os.kill(pid, signal.SIGSTOP)
    sent = time.monotonic()
    try:
        error, at = _run_until_error(engine)
    finally:
        _kill_quietly(pid)
    assert at - sent < 2 + 15.0
    assert "rank(s) 1 did not answer" in str(error)
    assert not _alive(pid)


def test_the_server_fails_in_flight_requests_and_reports_unhealthy(tp_model_dirs, make_tp_engine):
    core = make_tp_engine(tp_model_dirs["kv2"], tensor_parallel_size=2, max_model_len=256)
    state = build_state(core, served_model_name="tp", shutdown_grace_s=1.0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = make_server(create_app(state), host="127.0.0.1", port=sock.getsockname()[1], log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_healthy(url)
        sent = _signal_soon(core.executor.worker_pids()[1], signal.SIGKILL, 0.5)
        body = {"model": "tp", "prompt": "a long one", "max_tokens": 100, "ignore_eos": True, "temperature": 0}
        reply = httpx.post(url + "/v1/completions", json=body, timeout=30)
        assert time.monotonic() - sent["at"] < 10.0
        assert reply.status_code == 500 and "rank 1" in reply.text
        health = httpx.get(url + "/health", timeout=5)
        assert health.status_code == 503 and "rank 1" in health.text
        assert httpx.post(url + "/v1/completions", json=body, timeout=5).status_code == 503
    finally:
        server.should_exit = True
        thread.join(15)


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("the server did not come up")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_quietly(pid: int) -> None:
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_a_model_that_cannot_split_is_refused_at_start_up(tp_model_dirs, make_tp_engine):
    """Three attention heads cannot split over two ranks; every process is gone afterwards."""
    started = time.monotonic()
    with pytest.raises(TokenmillError, match="does not divide the model's 3 attention heads"):
        make_tp_engine(tp_model_dirs["heads3"], tensor_parallel_size=2)
    assert time.monotonic() - started < 60
    assert not multiprocessing.active_children()
    assert not torch.distributed.is_initialized()  # this process can start another parallel engine


def test_a_rank_that_dies_while_idle_marks_the_engine_dead(tp_model_dirs, make_tp_engine):
    """No step runs: the watcher sees the death, and the step loop stops taking requests (/health: 503)."""
    import asyncio

    from tokenmill.engine.async_engine import AsyncEngine, EngineShuttingDown

    core = make_tp_engine(tp_model_dirs["kv2"], tensor_parallel_size=2)
    pid = core.executor.worker_pids()[1]

    async def scenario() -> float:
        engine = AsyncEngine(core)
        assert engine.is_running
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        while engine.is_running and time.monotonic() - killed < 10:
            await asyncio.sleep(0.05)
        took = time.monotonic() - killed
        assert not engine.is_running and "rank 1" in engine.dead_reason
        with pytest.raises(EngineShuttingDown, match="rank 1"):
            async for _ in engine.generate("hi", SamplingParams(max_tokens=2), "late"):
                pass
        await engine.shutdown()
        return took

    assert asyncio.run(scenario()) < 5.0  # the watcher looks every 0.5 s, the idle loop every 0.5 s
