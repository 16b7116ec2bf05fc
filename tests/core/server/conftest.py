"""A real tokenmill server on 127.0.0.1 (default SmolLM2 model, CPU), shared by the server tests."""

from __future__ import annotations

import copy
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.server.app import build_process_state, build_state, create_app
from tokenmill.server.cors import allow_origins
from tokenmill.server.launch import make_server
from tokenmill.server.state import ServerState

API_KEY = "sk-tokenmill-test"
MODEL = "tokenmill-test"
MAX_MODEL_LEN = 512
# TOKENMILL_TEST_ENGINE_PROCESS=1 serves the shared server's engine core from its own process (as
# `tokenmill serve` does by default); then `core` only offers the tokenizer, so tests that patch the
# in-process EngineCore run in the default, in-process mode only.
ENGINE_PROCESS = os.environ.get("TOKENMILL_TEST_ENGINE_PROCESS") == "1"
ENGINE_ARGS = dict(dtype="float32", max_model_len=MAX_MODEL_LEN, kv_cache_memory=96 * 2**20, max_num_seqs=64)


@dataclass
class LiveServer:
    """A running server and handles to check it: its URL, state and engine."""

    url: str
    state: ServerState
    core: EngineCore
    model: str = MODEL
    api_key: str = API_KEY
    max_model_len: int = MAX_MODEL_LEN

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.api_key or "none", max_retries=0, timeout=120,
                             **kwargs)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=self.api_key or "none", max_retries=0, timeout=120)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics by name (labels folded into the name as name{k=v}).

        Every sample must carry the served name as its model_name label, which is left out of the key.
        """
        text = httpx.get(self.url + "/metrics", timeout=30).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                assert sample.labels.get("model_name") == self.model, sample
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "model_name")
                samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
        return samples

    def wait_idle(self, timeout: float = 60.0) -> dict[str, float]:
        """Poll /metrics until nothing runs or waits and every KV block is free; return the samples."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            idle = (m["tokenmill:num_requests_running"] == 0 and m["tokenmill:num_requests_waiting"] == 0
                    and m["tokenmill:kv_cache_free_blocks"] == m["tokenmill:kv_cache_total_blocks"])
            if idle or time.monotonic() > deadline:
                return m
            time.sleep(0.1)


@dataclass
class _TokenizerOnly:
    """Stands for the EngineCore of a server whose engine runs in another process."""

    tokenizer: Any
    args: EngineArgs


@contextmanager
def serve_in_thread(core: Any, *, cors_origins: list[str] | None = None, state: ServerState | None = None,
                    **state_kwargs: Any) -> Iterator[LiveServer]:
    """A real server over `core` (or over a ready `state`) on a free 127.0.0.1 port in a thread; stopped on leaving."""
    if state is None:
        state = build_state(core, **{"served_model_name": MODEL, "api_key": API_KEY, "shutdown_grace_s": 2.0,
                                     **state_kwargs})
    app = create_app(state)
    allow_origins(app, cors_origins or [])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = make_server(app, host="127.0.0.1", port=sock.getsockname()[1], log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield LiveServer(f"http://127.0.0.1:{sock.getsockname()[1]}", state, core, model=state.model_name,
                     api_key=state.api_key)
    server.should_exit = True
    thread.join(30)
    assert not thread.is_alive(), "the test server did not stop"


@pytest.fixture(scope="session")
def live_server() -> LiveServer:
    state = None
    if ENGINE_PROCESS:
        state = build_process_state(EngineArgs(**ENGINE_ARGS), served_model_name=MODEL, api_key=API_KEY,
                                    shutdown_grace_s=2.0, log_level="warning")
        core = _TokenizerOnly(copy.deepcopy(state.tokenizer), EngineArgs(**ENGINE_ARGS))
    else:
        core = EngineCore(EngineArgs(**ENGINE_ARGS))
    with serve_in_thread(core, state=state) as server:
        yield server


@pytest.fixture(scope="session")
def server_in_thread():
    """serve_in_thread, for a test module that needs a server of its own (a context manager)."""
    return serve_in_thread
