"""Tokenizer and chat template from a model directory; the GGUF path is checked in test_smollm2_gguf."""

from __future__ import annotations

import pytest

from tiny_models import CHAT_TEMPLATE, write_tiny_model
from tokenmill.errors import ModelLoadError
from tokenmill.loaders import load_model_bundle
from tokenmill.fast_tokenizer import FastTokenizer
from tokenmill.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model("llama2", tmp_path_factory.mktemp("tok") / "llama2")


def test_directory_tokenizer_and_chat_template(tiny):
    tokenizer = load_tokenizer(tiny)
    assert isinstance(tokenizer, FastTokenizer)  # transformers' own where a snapshot would differ
    assert tokenizer.chat_template == CHAT_TEMPLATE
    messages = [{"role": "user", "content": "hé"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|user|>hé</s><|assistant|>"
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert tokenizer.decode(ids) == text and len(ids) == 6  # 2 specials + 3 bytes + 1 special


def test_bundle_carries_tokenizer_and_stop_ids(tiny, cpu):
    plugins, platform = cpu
    bundle = load_model_bundle(str(tiny), platform=platform, plugins=plugins, dtype="float32")
    assert bundle.tokenizer.eos_token == "</s>" and bundle.eos_token_ids == [257]
    assert bundle.source == str(tiny) and bundle.max_model_len == 256


def test_directory_without_tokenizer(tiny, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_bytes((tiny / "config.json").read_bytes())
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        load_tokenizer(bare)
