"""`tokenmill serve` as an operator meets it: the start-up line, the access log, stats, the chat page."""

from __future__ import annotations

import time

import httpx

from serve_process import start_serve, stop_serve


def _chat(url: str, max_tokens: int = 8) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=120,
                      json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": max_tokens})


def test_startup_line_names_device_dtype_quantization_and_capacity(served):
    log = served.log()
    line = next(line for line in log.splitlines() if "engine ready" in line)
    for part in ("on cpu", "dtype float32", "quantization", "KV blocks", "max concurrency"):
        assert part in line, line


def test_access_log_and_periodic_stats(served):
    assert _chat(served.url, max_tokens=24).status_code == 200
    deadline = time.monotonic() + 10
    while "avg generation throughput" not in served.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = served.log()
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in log
    stats = next(line for line in log.splitlines() if "avg generation throughput" in line)
    assert "running:" in stats and "waiting:" in stats and "KV cache usage:" in stats


def test_chat_page_is_served_at_the_root(served):
    page = httpx.get(served.url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "v1/chat/completions" in page.text and "<script" in page.text


def test_chat_page_and_access_log_switch_off(tmp_path):
    server = start_serve(tmp_path, "--no-chat-page", "--no-access-log", "--disable-log-stats")
    try:
        page = httpx.get(server.url + "/", timeout=30)
        assert page.status_code == 404 and "--no-chat-page" in page.json()["error"]["message"]
        assert _chat(server.url).status_code == 200
        assert "POST /v1/chat/completions" not in server.log()
    finally:
        stop_serve(server)


def test_cors_answers_only_allowed_origins(served):
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(served.url + "/v1/chat/completions", timeout=30,
                             headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                      "Access-Control-Request-Headers": "authorization,content-type"})

    allowed = preflight("http://app.example")
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://app.example"
    assert "access-control-allow-origin" not in preflight("http://evil.example").headers
