"""Schemathesis against the live server's OpenAPI schema: no 5xx and no response that breaks the schema.

Fixed seed and a bounded number of examples per operation, so a CI run is reproducible and short.
Strings are drawn from all of Unicode (codec=None), and a third of the cases have a lone UTF-16
surrogate put into their body, which schemathesis itself never generates (it cannot encode one
as UTF-8; JSON carries it as a \\ud800 escape).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
MAX_EXAMPLES = 20


@pytest.fixture(scope="module")
def api_schema(live_server):
    limits = live_server.state.limits
    saved = limits.max_n
    limits.max_n = 4  # keep generated fan-out cheap; n > 4 is an ordinary documented 400
    schema = schemathesis.openapi.from_url(live_server.url + "/openapi.json")
    schema.config.generation.update(codec=None, max_examples=MAX_EXAMPLES)
    yield schema
    limits.max_n = saved


schema = schemathesis.pytest.from_fixture("api_schema")


def _with_lone_surrogate(value: Any) -> Any:
    """A copy of `value` with the first string it holds given a lone surrogate."""
    if isinstance(value, str):
        return value + "\ud800"
    if isinstance(value, dict):
        for key in value:
            changed = _with_lone_surrogate(value[key])
            if changed is not value[key]:
                return {**value, key: changed}
    if isinstance(value, list):
        for i, item in enumerate(value):
            changed = _with_lone_surrogate(item)
            if changed is not item:
                return [*value[:i], changed, *value[i + 1:]]
    return value


def _steered(body: Any, live_server, digest: bytes) -> Any:
    """Most bodies aimed past the first checks: the served model's name, token ids inside the
    vocabulary, short generations. Random names and ids would almost all stop at a 404 or 400."""
    if not isinstance(body, dict) or digest[1] % 4 == 0:
        return body
    vocab = len(live_server.core.tokenizer)
    body = dict(body)
    if "model" in body:
        body["model"] = live_server.model
    for key in ("tokens", "prompt", "stop_token_ids"):
        value = body.get(key)
        if isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            body[key] = [abs(t) % vocab for t in value]
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if isinstance(body.get(key), int) and not isinstance(body[key], bool):
            body[key] = min(body[key], 8)
    cap = "max_output_tokens" if "input" in body else "max_tokens"
    if digest[2] % 2 and not any(k in body for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")):
        body[cap] = 8  # half of the uncapped bodies: each would otherwise generate to the context's end
    return body


@schema.parametrize()
@seed(18)
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, live_server):
    body = getattr(case, "body", None)
    digest = hashlib.sha1(repr(body).encode("utf-8", "backslashreplace")).digest()
    documented = case.method.upper() == case.operation.method.upper()  # not one of the unsupported-method probes
    if documented and body is not None:
        body = case.body = _steered(body, live_server, digest)
    hostile = _with_lone_surrogate(body) if documented and isinstance(body, (dict, list)) and digest[0] % 3 == 0 \
        else body
    if hostile is body:
        case.call_and_validate(headers=live_server.headers, checks=CHECKS, timeout=60)
        return
    # schemathesis re-validates a body before sending it and cannot encode a lone surrogate: sent by hand
    response = httpx.request(case.method.upper(), live_server.url + case.formatted_path, content=json.dumps(hostile),
                             headers={**live_server.headers, "Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 400, (case.method, case.formatted_path, response.text)
    assert "surrogate" in response.json()["error"]["message"] and response.json()["error"]["param"]
