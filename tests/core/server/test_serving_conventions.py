"""What a vLLM user expects of a server: several served names, metrics with a model_name label and under
vLLM's names, CORS, --chat-template from a file or inline, known no-effect fields accepted and unknown
fields refused by name, and `tokenmill complete` / `tokenmill chat --url` as clients of a running server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tokenmill.cli.main import build_parser, parse_args
from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from tiny_models import write_tiny_model  # noqa: E402

NAMES = ["alias-a", "alias-b"]
ORIGIN = "http://app.example"
TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' + TAG + m['content'] + '</s>' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


@pytest.fixture(scope="module")
def vllm_style(live_server, server_in_thread):
    """A second server on the session server's model: two names, vLLM metric names, one CORS origin, no key."""
    core = EngineCore(EngineArgs(dtype="float32", max_model_len=512, kv_cache_memory=32 * 2**20),
                      bundle=live_server.core.bundle)
    with server_in_thread(core, served_model_name=NAMES, api_key=None, metric_names="vllm",
                         cors_origins=[ORIGIN]) as server:
        yield server


def test_every_served_name_answers_and_the_first_is_reported(vllm_style):
    client = openai.OpenAI(base_url=vllm_style.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == NAMES
    chat = client.chat.completions.create(model="alias-b", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert chat.model == "alias-a"
    assert client.responses.create(model="alias-b", input="Hi", max_output_tokens=2).model == "alias-a"


def test_vllm_metric_names_carry_the_model_label(vllm_style):
    vllm_style.client().completions.create(model="alias-a", prompt="Hello", max_tokens=3)
    deadline = time.monotonic() + 30
    while "vllm:request_success_total{finished_reason=length}" not in (samples := vllm_style.metrics()):
        assert time.monotonic() < deadline, samples
        time.sleep(0.1)
    for name in ("vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_count",
                 "vllm:e2e_request_latency_seconds_count", "vllm:request_success_total{finished_reason=length}",
                 "tokenmill:kv_cache_total_blocks"):
        assert name in samples, name
    assert samples["vllm:generation_tokens_total"] >= 3
    assert not [name for name in samples if name.startswith("tokenmill:num_requests")]


def test_the_default_names_carry_the_model_label_too(live_server):
    samples = live_server.metrics()  # asserts model_name on every sample
    assert "tokenmill:num_requests_running" in samples and not [n for n in samples if n.startswith("vllm:")]


def test_cors_preflight_is_answered_only_for_allowed_origins(vllm_style, live_server):
    def preflight(url: str, origin: str) -> httpx.Response:
        return httpx.options(url + "/v1/responses", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})

    allowed = preflight(vllm_style.url, ORIGIN)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    refused = preflight(vllm_style.url, "http://evil.example")
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    no_cors = preflight(live_server.url, ORIGIN)  # a server without --allowed-origins
    assert "access-control-allow-origin" not in no_cors.headers


@pytest.mark.parametrize("inline", [False, True])
def test_chat_template_from_a_file_or_inline(tmp_path, inline, server_in_thread):
    model = write_tiny_model("llama2", tmp_path / "m")
    tag = "[inline]" if inline else "[file]"
    template = TEMPLATE.replace("TAG", repr(tag))
    source = template
    if not inline:
        source = str(tmp_path / "template.jinja")
        Path(source).write_text(template)
    core = EngineCore(EngineArgs(model=str(model), device="cpu", dtype="float32", kv_cache_memory=4 * 2**20))
    with server_in_thread(core, api_key=None) as plain:
        plain_ids = _render(plain, "hi")
    core = EngineCore(EngineArgs(model=str(model), device="cpu", dtype="float32", kv_cache_memory=4 * 2**20,
                                 chat_template=source))
    with server_in_thread(core, api_key=None) as server:
        ids = _render(server, "hi")
        text = httpx.post(server.url + "/detokenize", json={"tokens": ids}, timeout=30).json()["prompt"]
        assert text == f"<|user|>{tag}hi</s><|assistant|>" and ids != plain_ids
        reply = server.client().chat.completions.create(model=server.model, max_tokens=3, temperature=0,
                                                        messages=[{"role": "user", "content": "hi"}])
        assert reply.usage.prompt_tokens == len(ids)


def _render(server, content: str) -> list[int]:
    answer = httpx.post(server.url + "/tokenize", timeout=30,
                        json={"messages": [{"role": "user", "content": content}]})
    assert answer.status_code == 200, answer.text
    return answer.json()["tokens"]


def test_serve_flags_take_several_names_and_vllm_spellings():
    args = parse_args(build_parser(), ["serve", "--served-model-name", "a", "b", "--served-model-name", "c",
                                       "--metric-names", "vllm", "--kv-cache-memory-bytes", "1000000",
                                       "--no-enable-prefix-caching", "--allowed-origins", '["http://x"]',
                                       "--allow-credentials"])
    assert args.served_model_name == ["a", "b", "c"] and args.metric_names == "vllm"
    assert args.kv_cache_memory == 1_000_000 and args.enable_prefix_caching is False
    assert args.allowed_origins == ["http://x"] and args.allow_credentials


# ----------------------------------------------------------------------------- the field policy


def _chat(server, **fields) -> httpx.Response:
    body = {"model": server.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **fields}
    return httpx.post(server.url + "/v1/chat/completions", json=body, headers=server.headers, timeout=60)


def test_known_fields_that_change_nothing_are_accepted(live_server):
    baseline = _chat(live_server, temperature=0)
    ignored = _chat(live_server, temperature=0, user="u-1", metadata={"k": "v"}, store=False, service_tier="auto",
                    parallel_tool_calls=False, reasoning_effort="low", prompt_cache_key="p", safety_identifier="s")
    assert baseline.status_code == ignored.status_code == 200, ignored.text
    assert ignored.json()["choices"][0]["message"] == baseline.json()["choices"][0]["message"]
    completion = httpx.post(live_server.url + "/v1/completions", headers=live_server.headers, timeout=60,
                            json={"prompt": "Hi", "max_tokens": 2, "user": "u-1"})
    assert completion.status_code == 200, completion.text


@pytest.mark.parametrize("fields, param, words", [
    ({"frobnicate": 1}, "frobnicate", "unknown field"),
    ({"store": True}, "store", "store=false"),
    ({"background": True}, "background", "background=false"),
    ({"modalities": ["audio"]}, "modalities", "unknown field"),
])
def test_unknown_and_unsupported_fields_are_refused_by_name(live_server, fields, param, words):
    answer = _chat(live_server, **fields)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == param and words in error["message"], error


# ----------------------------------------------------------------------------- the CLI clients


def _tokenmill(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenmill.cli.main", *args], capture_output=True, text=True,
                          timeout=300, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def test_complete_client_streams_what_the_server_completes(vllm_style):
    expected = vllm_style.client().completions.create(model="alias-a", prompt="The capital of France is",
                                                      max_tokens=6, temperature=0).choices[0].text
    done = _tokenmill("complete", "--url", vllm_style.url, "-q", "The capital of France is", "--max-tokens", "6",
                      "--temperature", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(expected) and expected.strip()
    lines = _tokenmill("complete", "--url", vllm_style.url + "/v1", "--model-name", "alias-b", "--max-tokens", "3",
                       stdin="One\nTwo\n")
    assert lines.returncode == 0 and lines.stdout.count("> ") == 3, lines.stdout


def test_chat_client_keeps_the_conversation(vllm_style):
    done = _tokenmill("chat", "--url", vllm_style.url, "--max-tokens", "12", "--temperature", "0",
                      "--system-prompt", "You are terse.", stdin="What is the capital of France?\nAnd of Italy?\n")
    assert done.returncode == 0, done.stderr
    replies = [line for line in done.stdout.splitlines() if "bot> " in line]
    assert len(replies) == 2 and "Paris" in replies[0]
    quick = _tokenmill("chat", "--url", vllm_style.url, "--quick", "Say hi", "--max-tokens", "4")
    assert quick.returncode == 0 and quick.stdout.startswith("bot> "), quick.stdout


def test_clients_name_an_unreachable_server_or_unknown_model(vllm_style):
    gone = _tokenmill("complete", "--url", "http://127.0.0.1:9", "-q", "hi")
    assert gone.returncode == 2 and "cannot reach the server" in gone.stderr and "Traceback" not in gone.stderr
    wrong = _tokenmill("chat", "--url", vllm_style.url, "--model-name", "nope", "--quick", "hi")
    assert wrong.returncode == 2 and "does not exist" in wrong.stderr
