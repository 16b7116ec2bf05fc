"""Hub ids (org/name) resolve through a Hugging Face cache laid out as huggingface_hub writes it.

Every test works offline: the cache is built in a temporary directory, HF_HUB_OFFLINE=1 is set,
and the one test of an unreachable Hub points HF_ENDPOINT at a closed local port.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import CHAT_TEMPLATE, write_tiny_model

from tokenmill import LLM, SamplingParams
from tokenmill.errors import ModelLoadError
from tokenmill.loaders.default_model import DEFAULT_FILE, default_model_path
from tokenmill.loaders.hub import is_hub_id, model_path, resolve_hub_model

COMMIT_MAIN = "a" * 40
COMMIT_V1 = "b" * 40


def _snapshot(cache: Path, repo_id: str, commit: str, ref: str | None = "main") -> Path:
    """The snapshot folder of `repo_id` at `commit`, with refs/<ref> pointing at it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_id_shapes(tmp_path):
    assert is_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert is_hub_id("org/name-GGUF/model.Q4_K_M.gguf")
    assert not is_hub_id("./org/name") and not is_hub_id("/abs/path") and not is_hub_id("~/models/x")
    assert not is_hub_id("a/b/c") and not is_hub_id("justaname")
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not is_hub_id(str(tmp_path / "org" / "name"))  # an existing path is a path


def test_cached_model_generates_offline(hf_cache):
    write_tiny_model("llama3", _snapshot(hf_cache, "acme/tiny-llama", COMMIT_MAIN))
    llm = LLM("acme/tiny-llama", device="cpu", dtype="float32", kv_cache_memory="4MiB")
    out = llm.generate("hello", SamplingParams(max_tokens=4, temperature=0))
    assert len(out[0].outputs[0].token_ids) == 4
    assert llm.engine.model_name == "acme/tiny-llama"


def test_revision_picks_its_snapshot(hf_cache):
    write_tiny_model("llama3", _snapshot(hf_cache, "acme/tiny-llama", COMMIT_MAIN))
    write_tiny_model("qwen2", _snapshot(hf_cache, "acme/tiny-llama", COMMIT_V1, ref="v1"))
    assert resolve_hub_model("acme/tiny-llama").name == COMMIT_MAIN
    assert resolve_hub_model("acme/tiny-llama", "v1").name == COMMIT_V1
    llm = LLM("acme/tiny-llama", revision="v1", device="cpu", dtype="float32", kv_cache_memory="4MiB")
    assert llm.engine.bundle.arch.architecture.startswith("Qwen2")


def test_tokenizer_from_another_hub_id(hf_cache, tmp_path):
    model_dir = write_tiny_model("llama2", tmp_path / "weights-only")
    tok_snapshot = _snapshot(hf_cache, "acme/tokenizer", COMMIT_MAIN)
    for name in os.listdir(model_dir):
        if name.startswith(("tokenizer", "special_tokens", "chat_template")):
            (tok_snapshot / name).write_bytes((model_dir / name).read_bytes())
            (model_dir / name).unlink()
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        LLM(str(model_dir), device="cpu", dtype="float32", kv_cache_memory="4MiB")
    llm = LLM(str(model_dir), tokenizer="acme/tokenizer", device="cpu", dtype="float32", kv_cache_memory="4MiB")
    assert llm.get_tokenizer().chat_template == CHAT_TEMPLATE  # the tokenizer repository's files
    assert llm.generate("hi")[0].outputs[0].token_ids


def test_one_gguf_file_of_a_repository(hf_cache):
    snapshot = _snapshot(hf_cache, "acme/smol-GGUF", COMMIT_MAIN)
    (snapshot / DEFAULT_FILE).symlink_to(default_model_path())
    assert model_path(f"acme/smol-GGUF/{DEFAULT_FILE}") == snapshot / DEFAULT_FILE
    with pytest.raises(ModelLoadError, match=f"acme/smol-GGUF/{DEFAULT_FILE}"):
        model_path("acme/smol-GGUF")  # a GGUF repository: the error names the file ids to use


def test_missing_from_cache_while_offline_says_how_to_download(hf_cache):
    with pytest.raises(ModelLoadError) as info:
        model_path("acme/not-downloaded")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "hf download acme/not-downloaded" in message


def test_unreachable_hub_says_so(tmp_path):
    """A real download attempt against a closed local port (never the network): one clear line."""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_OFFLINE": "0", "HF_HUB_DOWNLOAD_TIMEOUT": "2", "HF_HUB_ETAG_TIMEOUT": "2"}
    done = subprocess.run([sys.executable, "-m", "tokenmill.cli.main", "generate", "hi", "--model",
                           "acme/not-downloaded"], capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    assert "cannot reach the Hugging Face Hub" in done.stderr and "hf download" in done.stderr
    assert "Traceback" not in done.stderr
