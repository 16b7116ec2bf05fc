"""--reasoning-parser qwen3 on a tiny random Qwen3 model whose chat template opens <think>: the thinking goes
to reasoning_content and the rest to content, streamed and not, and enable_thinking=false turns it off."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from tiny_models import write_tiny_model  # noqa: E402

from tokenmill.config import EngineArgs  # noqa: E402
from tokenmill.engine.core import EngineCore  # noqa: E402
from tokenmill.server.app import build_state, create_app  # noqa: E402
from tokenmill.server.launch import make_server  # noqa: E402

# Qwen3's way: the generation prompt opens the thinking block, or closes an empty one when thinking is off.
THINK_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '</s>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}"
    "{% if enable_thinking is defined and not enable_thinking %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)
# The random model writes what this regex allows: some thinking, the closing tag, then an answer.
SHAPE = r"[a-z]{3,8} [a-z]{3,8}</think>\n[a-z]{3,8}"
ASK = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def qwen3_server(tmp_path_factory):
    directory = write_tiny_model("qwen3", tmp_path_factory.mktemp("qwen3-think"))
    config = directory / "tokenizer_config.json"
    import json

    data = json.loads(config.read_text())
    data["chat_template"] = THINK_TEMPLATE
    config.write_text(json.dumps(data))
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    core = EngineCore(EngineArgs(model=str(directory), dtype="float32", kv_cache_memory=8 * 2**20, max_num_seqs=8))
    state = build_state(core, served_model_name="tiny-qwen3")
    state.reasoning_parser = "qwen3"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = make_server(create_app(state), host="127.0.0.1", port=sock.getsockname()[1], log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.05)
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1", api_key="x", max_retries=0)
    server.should_exit = True
    thread.join(30)


def _chat(client, **kwargs):
    return client.chat.completions.create(model="tiny-qwen3", messages=ASK, temperature=0, max_tokens=40,
                                          extra_body={"structured_outputs": {"regex": SHAPE},
                                                      **kwargs.pop("extra", {})}, **kwargs)


def test_thinking_goes_to_reasoning_content(qwen3_server):
    out = _chat(qwen3_server)
    message = out.choices[0].message
    raw = _chat(qwen3_server, extra={"chat_template_kwargs": {"enable_thinking": True}}).choices[0].message
    assert raw.reasoning_content == message.reasoning_content
    thinking, answer = message.reasoning_content, message.content
    assert thinking and answer and "</think>" not in thinking + answer
    assert len(thinking.split()) == 2 and answer.isalpha()


def test_streamed_reasoning_matches_the_whole_answer(qwen3_server):
    whole = _chat(qwen3_server).choices[0].message
    reasoning, content, pieces = "", "", 0
    for chunk in _chat(qwen3_server, stream=True):
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning_content", None) or ""
        content += delta.content or ""
        pieces += 1
    assert (reasoning, content) == (whole.reasoning_content, whole.content)
    assert pieces > 3  # streamed in pieces, not one chunk


def test_enable_thinking_false_leaves_everything_in_content(qwen3_server):
    out = _chat(qwen3_server, extra={"chat_template_kwargs": {"enable_thinking": False}})
    message = out.choices[0].message
    assert message.reasoning_content is None and "</think>" in message.content
