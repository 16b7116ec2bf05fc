"""Hostile input: lone surrogates, oversized bodies and fan-out, request chat templates, lax types."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest

SURROGATE = "\\ud800"  # as it appears in the JSON text: an unpaired high surrogate
CHAT = "/v1/chat/completions"
USER_HI = '[{"role": "user", "content": "hi"}]'

# (path, JSON body with a lone surrogate, the field the 400 must name)
SURROGATE_SHAPES = [
    ("/v1/completions", f'{{"prompt": "a{SURROGATE}b", "max_tokens": 2}}', "prompt"),
    ("/v1/completions", f'{{"prompt": "a{SURROGATE}", "max_tokens": 2, "stream": true}}', "prompt"),
    ("/v1/completions", f'{{"prompt": ["fine", "x{SURROGATE}"], "max_tokens": 2}}', "prompt[1]"),
    ("/v1/completions", f'{{"prompt": "{SURROGATE}", "max_tokens": 2, "echo": true}}', "prompt"),
    (CHAT, f'{{"messages": [{{"role": "user", "content": "{SURROGATE}"}}], "max_tokens": 2}}',
     "messages[0].content"),
    (CHAT, f'{{"messages": [{{"role": "user", "content": "{SURROGATE}"}}], "max_tokens": 2, "stream": true}}',
     "messages[0].content"),
    (CHAT, f'{{"messages": [{{"role": "user{SURROGATE}", "content": "hi"}}], "max_tokens": 2}}',
     "messages[0].role"),
    (CHAT, f'{{"messages": [{{"role": "{SURROGATE}", "content": "hi"}}], "max_tokens": 2, "stream": true}}',
     "messages[0].role"),
    ("/tokenize", f'{{"prompt": "x{SURROGATE}"}}', "prompt"),
    ("/tokenize", f'{{"messages": [{{"role": "user", "content": "{SURROGATE}x"}}]}}', "messages[0].content"),
    (CHAT, f'{{"model": "{SURROGATE}", "messages": {USER_HI}, "max_tokens": 2}}', "model"),
    ("/v1/completions", f'{{"model": "{SURROGATE}", "prompt": "hi", "max_tokens": 2}}', "model"),
    ("/detokenize", f'{{"model": "{SURROGATE}", "tokens": [1, 2]}}', "model"),
    (CHAT, f'{{"messages": {USER_HI}, "chat_template_kwargs": {{"{SURROGATE}": 1}}}}',
     "chat_template_kwargs.\\ud800"),
]


def _post(live_server, path, body, headers=None, timeout=60):
    headers = live_server.headers if headers is None else headers
    return httpx.post(live_server.url + path, json=body, headers=headers, timeout=timeout)


@pytest.mark.parametrize("path,body,field", SURROGATE_SHAPES, ids=[f"{p}:{f}" for p, _, f in SURROGATE_SHAPES])
def test_lone_surrogate_is_400_naming_the_field_and_the_connection_lives_on(live_server, path, body, field):
    errors_before = live_server.metrics().get('tokenmill:request_errors_total{status=500}', 0.0)
    url = urlparse(live_server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        headers = {**live_server.headers, "Content-Type": "application/json"}
        conn.request("POST", path, body=body.encode(), headers=headers)
        response = conn.getresponse()
        payload = json.loads(response.read())
        sock = conn.sock
        assert response.status == 400, payload
        assert payload["error"]["param"] == field and "surrogate" in payload["error"]["message"]
        assert sock is not None, "the server closed the connection after the 400"
        conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "Hi", "max_tokens": 1}).encode(),
                     headers=headers)
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read())["choices"]
        assert conn.sock is sock, "the second request needed a new connection"
    finally:
        conn.close()
    assert live_server.metrics().get('tokenmill:request_errors_total{status=500}', 0.0) == errors_before


def test_a_surrogate_pair_is_ordinary_text(live_server):
    body = '{"prompt": "\\ud83d\\ude00 smile", "max_tokens": 1, "echo": true}'
    response = httpx.post(live_server.url + "/v1/completions", content=body.encode(),
                          headers={**live_server.headers, "Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200 and response.json()["choices"][0]["text"].startswith("\U0001F600 smile")


def test_request_chat_template_is_refused_unless_trusted(live_server):
    assert not live_server.state.trust_request_chat_template
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "chat_template_kwargs": {"chat_template": "{% for i in range(8000) %}{% for j in range(8000) %}"
                                                      "{% endfor %}{% endfor %}"}}
    response = _post(live_server, CHAT, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "chat_template_kwargs.chat_template"
    assert "--trust-request-chat-template" in error["message"]


@pytest.fixture
def trusted_templates(live_server, monkeypatch):
    """The shared server with request templates trusted and a 2 s render bound."""
    from tokenmill.server.template_sandbox import TemplateSandbox

    state = live_server.state
    sandbox = TemplateSandbox(timeout_s=2.0, max_chars=state.max_prompt_chars)
    monkeypatch.setattr(state, "trust_request_chat_template", True)
    monkeypatch.setattr(state, "template_sandbox", sandbox)
    assert sandbox.wait_ready(120), "the sandbox processes did not start"
    yield state
    sandbox.close()


def test_trusted_request_template_renders_like_the_model_would(live_server, trusted_templates):
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{{ eos_token }}"
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
            "chat_template_kwargs": {"chat_template": template}}
    response = _post(live_server, CHAT, body)
    assert response.status_code == 200, response.text
    tokenizer = live_server.core.tokenizer
    expected = tokenizer(f"[user] hi\n{tokenizer.eos_token}", add_special_tokens=False).input_ids
    assert response.json()["usage"]["prompt_tokens"] == len(expected)


def test_slow_trusted_template_does_not_delay_a_concurrent_stream(live_server, trusted_templates):
    """Two endless templates (both sandbox children busy) while a stream runs: each template gets a
    400 at its 2 s bound, and no gap between the stream's tokens exceeds 1 s."""
    hostile = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
               "chat_template_kwargs": {"chat_template": "{% for i in range(100000) %}{% for j in range(100000) %}"
                                                         "{{ '' }}{% endfor %}{% endfor %}"}}
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(_post(live_server, CHAT, hostile))) for _ in range(2)]
    body = {"model": live_server.model, "prompt": "Write about the sea.", "max_tokens": 480, "ignore_eos": True,
            "stream": True}
    arrivals = []
    with httpx.stream("POST", live_server.url + "/v1/completions", json=body, headers=live_server.headers,
                      timeout=60) as response:
        lines = response.iter_lines()
        next(lines)
        for thread in threads:
            thread.start()
        started = time.monotonic()
        for line in lines:
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    for thread in threads:
        thread.join(30)
    assert [a.status_code for a in answers] == [400, 400]
    assert all("did not finish rendering within 2 s" in a.json()["error"]["message"] for a in answers)
    assert arrivals[-1] - started > 2.0, "the stream ended before the templates hit their bound"
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert max(gaps) < 1.0, f"a stream gap of {max(gaps):.2f} s while templates rendered"


def test_stop_string_count_and_length_are_capped(live_server):
    limits = live_server.state.limits
    huge = _post(live_server, "/v1/completions", {"prompt": "hi", "max_tokens": 2, "stop": "x" * 1_000_000})
    assert huge.status_code == 400 and huge.json()["error"]["param"] == "stop"
    assert str(limits.max_stop_length) in huge.json()["error"]["message"]
    many = _post(live_server, CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                                     "stop": [f"s{i}" for i in range(limits.max_stop_strings + 1)]})
    assert many.status_code == 400 and many.json()["error"]["param"] == "stop"
    longest = ["y" * limits.max_stop_length for _ in range(limits.max_stop_strings)]
    assert _post(live_server, "/v1/completions", {"prompt": "hi", "max_tokens": 2, "stop": longest}).status_code == 200


def test_n_over_the_cap_is_400(live_server):
    response = _post(live_server, "/v1/completions", {"prompt": "hi", "max_tokens": 1, "n": 129})
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"
    assert "128" in response.json()["error"]["message"]


def test_body_over_the_limit_is_413_declared_or_streamed(live_server, monkeypatch):
    monkeypatch.setattr(live_server.state.limits, "max_body_bytes", 4096)
    body = {"prompt": "word " * 2000, "max_tokens": 1}
    declared = _post(live_server, "/v1/completions", body)
    assert declared.status_code == 413 and "4096" in declared.json()["error"]["message"]

    def chunks():
        for _ in range(10):
            yield b" " * 1000
        yield json.dumps(body).encode()

    streamed = httpx.post(live_server.url + "/v1/completions", content=chunks(), timeout=60,
                          headers={**live_server.headers, "Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert _post(live_server, "/v1/completions", {"prompt": "hi", "max_tokens": 1}).status_code == 200


def test_overlong_prompt_is_refused_by_its_characters_before_tokenizing(live_server):
    state = live_server.state
    prompt = "ab" * (state.max_prompt_chars // 2 + 1)
    for path, body, param in (("/v1/completions", {"prompt": prompt}, "prompt"),
                              ("/v1/completions", {"prompt": ["ok", prompt]}, "prompt"),
                              (CHAT, {"messages": [{"role": "user", "content": prompt}]}, "messages"),
                              ("/tokenize", {"prompt": prompt}, "prompt")):
        response = _post(live_server, path, body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param
        assert f"{len(prompt)} characters" in response.json()["error"]["message"]


@pytest.mark.parametrize("body,param", [
    ({"prompt": "hi", "max_tokens": True}, "max_tokens"),
    ({"prompt": [True, False]}, "prompt"),
    ({"prompt": "hi", "temperature": "1"}, "temperature"),
    ({"prompt": "hi", "temperature": -1}, "temperature"),
    ({"prompt": "hi", "top_p": 0}, "top_p"),
    ({"prompt": "hi", "min_tokens": 5, "max_tokens": 2}, "min_tokens"),
    ({"prompt": "hi", "seed": 2**70}, "seed"),
])
def test_lax_types_and_range_errors_are_400_naming_the_field(live_server, body, param):
    response = _post(live_server, "/v1/completions", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_unknown_role_is_400(live_server):
    response = _post(live_server, CHAT, {"messages": [{"role": "wizard", "content": "hi"}]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    assert "wizard" in response.text or "role" in response.json()["error"]["message"]


def test_key_is_checked_before_the_body_is_parsed(live_server):
    response = httpx.post(live_server.url + "/v1/completions", content=b"{not json",
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 401
    with_key = httpx.post(live_server.url + "/v1/completions", content=b"{not json", timeout=30,
                          headers={**live_server.headers, "Content-Type": "application/json"})
    assert with_key.status_code == 400 and "not valid JSON" in with_key.json()["error"]["message"]


def test_openapi_documents_400_not_422_and_health_is_json(live_server):
    schema = httpx.get(live_server.url + "/openapi.json", timeout=30).json()
    for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"):
        responses = schema["paths"][path]["post"]["responses"]
        assert "422" not in responses and "400" in responses and "401" in responses and "413" in responses
    health = httpx.get(live_server.url + "/health", timeout=30)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert schema["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


def test_metrics_key_and_cached_blocks_gauge(live_server, monkeypatch):
    _post(live_server, "/v1/completions", {"prompt": "The cached prefix " * 8, "max_tokens": 1})
    samples = live_server.metrics()
    assert samples["tokenmill:kv_cache_cached_blocks"] == live_server.state.engine.latest_stats.num_cached_blocks
    assert samples["tokenmill:kv_cache_cached_blocks"] >= 1
    monkeypatch.setattr(live_server.state, "metrics_api_key", "scrape-key")
    assert httpx.get(live_server.url + "/metrics", timeout=30).status_code == 401
    assert httpx.get(live_server.url + "/metrics", headers=live_server.headers, timeout=30).status_code == 401
    keyed = httpx.get(live_server.url + "/metrics", headers={"Authorization": "Bearer scrape-key"}, timeout=30)
    assert keyed.status_code == 200 and "tokenmill:kv_cache_cached_blocks" in keyed.text


def test_empty_api_key_is_refused(live_server):
    from tokenmill.server.app import build_state

    with pytest.raises(ValueError, match="empty"):
        build_state(live_server.core, api_key="")
    with pytest.raises(ValueError, match="empty"):
        build_state(live_server.core, metrics_api_key="  ")


@pytest.mark.parametrize("raw", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"prompt": "hi", "n": 1' + b"0" * 5000 + b"}",
    b'{"prompt": "hi", "temperature": NaN}',
    b'{"prompt": "hi", "temperature": Infinity}',
    b'["not", "an", "object"]',
    b'"just a string"',
    b"\xff\xfe{}",
    b'{"prompt": "\xed\xa0\x80"}',  # a surrogate as raw (invalid) UTF-8 bytes
    b'{"prompt": {"deep": ' * 500 + b"1" + b"}" * 500,
], ids=["deep-list", "huge-int", "nan", "inf", "array", "string", "bad-utf8", "raw-surrogate", "deep-object"])
def test_odd_bodies_are_4xx_and_never_5xx(live_server, raw):
    response = httpx.post(live_server.url + "/v1/completions", content=raw, timeout=60,
                          headers={**live_server.headers, "Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_rate_limit_per_key_gives_429_with_retry_after(live_server, monkeypatch):
    from tokenmill.server.rate_limit import RateLimiter

    monkeypatch.setattr(live_server.state, "rate_limiter", RateLimiter(rate=0.01, burst=3))
    statuses = [_post(live_server, "/tokenize", {"prompt": "hi"}) for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    wait = statuses[3].headers["retry-after"]
    assert 1 <= int(wait) <= 100 and f"retry after {wait} s" in statuses[3].json()["error"]["message"]
    assert statuses[3].json()["error"]["code"] == "rate_limit_exceeded"
    other_key = httpx.post(live_server.url + "/tokenize", json={"prompt": "hi"}, timeout=30,
                           headers={"Authorization": "Bearer another-key"})
    assert other_key.status_code == 401  # a wrong key is refused before it is counted
    assert httpx.get(live_server.url + "/health", timeout=30).status_code == 200  # open routes are not limited
