"""Every error is an OpenAI error object with the right status, and the server keeps serving after it."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest


def _post(live_server, path, body=None, *, headers=None, content=None):
    headers = live_server.headers if headers is None else headers
    response = httpx.post(live_server.url + path, json=body, content=content,
                          headers={"content-type": "application/json", **headers}, timeout=60)
    return response.status_code, response.json()


def _assert_error(status, body, expected_status, *words):
    assert status == expected_status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"], error["message"]
    assert "Traceback" not in error["message"]


def test_malformed_body_is_400(live_server):
    _assert_error(*_post(live_server, "/v1/completions", content=b"{not json"), 400, "not valid JSON")
    _assert_error(*_post(live_server, "/v1/completions", {"model": live_server.model}), 400, "prompt")
    _assert_error(*_post(live_server, "/v1/chat/completions", {"messages": "hi"}), 400, "messages")
    _assert_error(*_post(live_server, "/v1/completions", {"prompt": "hi", "max_tokenz": 3}), 400, "max_tokenz")
    status, body = _post(live_server, "/v1/completions", {"prompt": "hi", "temperature": -1})
    _assert_error(status, body, 400, "temperature")


def test_unsupported_options_are_refused_by_name(live_server):
    status, body = _post(live_server, "/v1/completions", {"prompt": "hi", "suffix": "bye"})
    _assert_error(status, body, 400, "suffix")
    assert body["error"]["param"] == "suffix"
    _assert_error(*_post(live_server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                               "top_logprobs": 2}), 400, "logprobs")


def test_unknown_model_and_route_are_404(live_server):
    with pytest.raises(openai.NotFoundError) as info:
        live_server.client().completions.create(model="gpt-4", prompt="hi", max_tokens=2)
    assert "gpt-4" in info.value.body["message"] and info.value.body["code"] == "model_not_found"
    response = httpx.get(live_server.url + "/v1/nowhere", headers=live_server.headers)
    assert response.status_code == 404 and "message" in response.json()["error"]


def test_prompt_plus_max_tokens_over_the_context_is_400_naming_both(live_server):
    prompt = "one two three four five"
    n_prompt = len(live_server.core.tokenizer(prompt).input_ids)
    with pytest.raises(openai.BadRequestError) as info:
        live_server.client().completions.create(model=live_server.model, prompt=prompt, max_tokens=600)
    message = info.value.body["message"]
    assert f"({n_prompt} tokens)" in message and "600" in message and str(live_server.max_model_len) in message


def test_missing_or_wrong_api_key_is_401(live_server):
    body = {"prompt": "hi", "max_tokens": 2}
    _assert_error(*_post(live_server, "/v1/completions", body, headers={}), 401, "API key")
    _assert_error(*_post(live_server, "/v1/completions", body, headers={"Authorization": "Bearer nope"}), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=live_server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(live_server.url + "/health").status_code == 200  # health needs no key


def test_engine_failure_of_one_request_is_500_for_it_only(live_server, monkeypatch):
    """A request whose admission crashes the engine gets a 500; a concurrent one is unaffected."""
    core = live_server.core
    real_add = core.add_request
    poison = core.tokenizer("POISON").input_ids  # the server sends the engine token ids

    def add_request(request_id, prompt, params, *, priority=0):
        if prompt == poison:  # fault injection: this one request breaks inside the engine
            raise RuntimeError("secret internal detail")
        return real_add(request_id, prompt, params, priority=priority)

    monkeypatch.setattr(core, "add_request", add_request)
    healthy = {}
    thread = threading.Thread(target=lambda: healthy.update(out=live_server.client().completions.create(
        model=live_server.model, prompt="Hello there", max_tokens=6, temperature=0)))
    thread.start()
    status, body = _post(live_server, "/v1/completions", {"prompt": "POISON", "max_tokens": 4})
    thread.join(60)
    _assert_error(status, body, 500)
    assert "secret internal detail" not in body["error"]["message"]
    assert healthy["out"].choices[0].finish_reason in ("stop", "length")
    monkeypatch.undo()
    after = live_server.client().completions.create(model=live_server.model, prompt="Hi", max_tokens=2)
    assert after.usage.completion_tokens >= 1


def test_engine_step_failure_fails_the_stream_with_an_error_event(live_server, monkeypatch):
    """A step that raises ends the in-flight stream with an error event; the next request works."""
    core = live_server.core
    real_step, calls = core.step, {"n": 0}

    def step():
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("kernel exploded")
        return real_step()

    monkeypatch.setattr(core, "step", step)
    body = {"model": live_server.model, "prompt": "Tell me about cats.", "max_tokens": 30, "ignore_eos": True,
            "stream": True}
    with httpx.stream("POST", live_server.url + "/v1/completions", json=body, headers=live_server.headers,
                      timeout=60) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200 and lines[-1] == "data: [DONE]"
    assert '"error"' in lines[-2] and "kernel exploded" not in lines[-2] and '"internal_server_error"' in lines[-2]
    monkeypatch.undo()
    assert live_server.client().completions.create(model=live_server.model, prompt="Hi", max_tokens=2).choices
    idle = live_server.wait_idle()
    assert idle["tokenmill:kv_cache_free_blocks"] == idle["tokenmill:kv_cache_total_blocks"]


def test_request_error_from_the_engine_is_a_400(live_server):
    # token ids outside the vocabulary: the engine refuses them with a RequestError
    vocab = len(live_server.core.tokenizer)
    status, body = _post(live_server, "/v1/completions", {"prompt": [1, 2, vocab + 5], "max_tokens": 2})
    _assert_error(status, body, 400, str(vocab + 5))
