"""`tokenmill chat` streams replies, says when one was cut, and samples with the model's defaults;
--chat-template supplies a template a model lacks, and the CLI's errors name CLI flags."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from tiny_models import CHAT_TEMPLATE, write_tiny_model  # noqa: E402

from tokenmill import LLM, SamplingParams  # noqa: E402
from tokenmill.cli.chat_cmd import stream_reply  # noqa: E402
from tokenmill.errors import ModelLoadError  # noqa: E402
from tokenmill.loaders.chat_template_source import read_chat_template  # noqa: E402

ENGINE = {"device": "cpu", "dtype": "float32", "kv_cache_memory": "4MiB"}


class Recorder(io.StringIO):
    """A stdout stand-in that remembers every write, to see the reply arrive in pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def _tokenmill(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenmill.cli.main", *args], capture_output=True, text=True,
                          timeout=300, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


@pytest.fixture(scope="module")
def no_template_dir(tmp_path_factory) -> Path:
    directory = write_tiny_model("llama2", tmp_path_factory.mktemp("plain"))
    (directory / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def test_reply_streams_and_a_cut_reply_says_so():
    llm = LLM(**{**ENGINE, "kv_cache_memory": "16MiB"})  # the embedded model: real words to stream
    out = Recorder()
    params = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)
    text = stream_reply(llm, [{"role": "user", "content": "Tell me a story."}], params, out=out)
    pieces = [w for w in out.writes[1:] if w and not w.startswith(("\n", "["))]
    assert len(pieces) >= 3  # written as tokens arrived, not once at the end
    assert "".join(pieces) == text
    assert "[reply cut at --max-tokens 6" in out.getvalue()
    assert not llm.engine.has_unfinished_requests()


def test_generation_config_gives_the_chat_defaults(tmp_path):
    directory = write_tiny_model("qwen2", tmp_path / "m")
    config = json.loads((directory / "generation_config.json").read_text())
    (directory / "generation_config.json").write_text(json.dumps({**config, "temperature": 0.6, "top_p": 0.8,
                                                                   "top_k": 20}))
    params = LLM(str(directory), **ENGINE).get_default_sampling_params()
    assert (params.temperature, params.top_p, params.top_k) == (0.6, 0.8, 20)


def test_embedded_model_chats_with_sampling_defaults_and_streams():
    done = _tokenmill("chat", "--max-tokens", "24", "--kv-cache-memory", "64MiB",
                      stdin="What is the capital of France?\nAnd of Italy?\n")
    assert done.returncode == 0, done.stderr
    replies = [line for line in done.stdout.splitlines() if "bot> " in line]
    assert len(replies) == 2 and "Paris" in replies[0]
    # the sampling defaults: SmolLM2's card values, since its GGUF has no generation_config
    from tokenmill.loaders.default_model import default_model_path
    from tokenmill.loaders.generation_defaults import generation_defaults

    assert generation_defaults(default_model_path()) == {"temperature": 0.2, "top_p": 0.9}


def test_chat_template_from_a_file_or_inline(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(CHAT_TEMPLATE)
    assert read_chat_template(str(path)) == CHAT_TEMPLATE
    assert read_chat_template(CHAT_TEMPLATE) == CHAT_TEMPLATE
    with pytest.raises(ModelLoadError, match="neither a file nor a Jinja template"):
        read_chat_template(str(tmp_path / "missing.jinja"))


def test_missing_template_error_names_the_cli_flags(no_template_dir):
    done = _tokenmill("generate", "hi", "--model", str(no_template_dir), "--max-tokens", "2",
                      "--kv-cache-memory", "4MiB")
    assert done.returncode == 2
    assert "--chat-template" in done.stderr and "--no-chat-template" in done.stderr
    assert "chat_template=" not in done.stderr and "Traceback" not in done.stderr


def test_chat_template_flag_supplies_one(no_template_dir, tmp_path):
    path = tmp_path / "template.jinja"
    path.write_text(CHAT_TEMPLATE)
    done = _tokenmill("generate", "hi", "--model", str(no_template_dir), "--max-tokens", "2",
                      "--kv-cache-memory", "4MiB", "--chat-template", str(path))
    assert done.returncode == 0, done.stderr
    llm = LLM(str(no_template_dir), chat_template=CHAT_TEMPLATE, **ENGINE)
    assert llm.get_tokenizer().chat_template == CHAT_TEMPLATE
    assert llm.chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=2))[0].outputs[0].token_ids
