"""FastTokenizer against the transformers tokenizer it stands in for, on the default model and a tiny one."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tiny_models import write_tiny_model
from tokenmill.fast_tokenizer import FastTokenizer, hf_tokenizer
from tokenmill.loaders.default_model import default_model_path
from tokenmill.tokenizer import ENV_CACHE_DIR, load_tokenizer

TEXTS = ["Hello, world!", " two  spaces", "tab\tnew\nline", "Hé 世界 🙂", "<|im_start|>user\nhi<|im_end|>\n",
         "<s>x</s>", "Hello , world . it 's", "a" * 300, ""]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_CACHE_DIR, str(tmp_path_factory.mktemp("tokenizer-cache")))
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model("llama2", tmp_path_factory.mktemp("fast-tok") / "llama2")


def _reference(source):
    if source.is_dir():
        return AutoTokenizer.from_pretrained(str(source))
    return AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)


@pytest.mark.parametrize("which", ["tiny", "gguf"])
def test_a_snapshot_load_matches_transformers(which, tiny, cache):
    source = tiny if which == "tiny" else default_model_path()
    first = load_tokenizer(source)  # builds transformers' tokenizer and snapshots it
    fast = load_tokenizer(source)  # from the snapshot
    ref = _reference(source)
    assert isinstance(first, FastTokenizer) and isinstance(fast, FastTokenizer)
    assert fast.__dict__["_hf"] is None  # nothing below may need transformers
    for text in TEXTS:
        for add in (True, False):
            ids = ref(text, add_special_tokens=add).input_ids
            assert fast(text, add_special_tokens=add).input_ids == ids == fast.encode(text, add_special_tokens=add)
            for skip in (True, False):
                assert fast.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
            assert fast.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    assert fast(TEXTS[:3]).input_ids == ref(TEXTS[:3]).input_ids
    assert fast.get_vocab() == ref.get_vocab() and len(fast) == len(ref) and fast.vocab_size == ref.vocab_size
    for name in ("eos_token", "eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id", "all_special_ids",
                 "special_tokens_map", "chat_template"):
        assert getattr(fast, name) == getattr(ref, name), name
    assert fast.convert_tokens_to_ids(["</s>", "never-a-token"]) == ref.convert_tokens_to_ids(["</s>", "never-a-token"])
    one = ref("Hello").input_ids[-1]
    assert fast.decode(one) == ref.decode(one) and fast.convert_ids_to_tokens(one) == ref.convert_ids_to_tokens(one)
    array = torch.tensor(ref(TEXTS[3]).input_ids)  # ids as a tensor, and one of them as a 0-d tensor
    assert fast.decode(array) == ref.decode(array) and fast.convert_ids_to_tokens(array) == ref.convert_ids_to_tokens(array)
    assert fast.decode(array[0]) == ref.decode(int(array[0]))
    assert fast.__dict__["_hf"] is None
    assert fast.encode("a b", "c d") == ref.encode("a b", "c d")  # a pair goes to transformers


def test_other_calls_go_to_transformers(tiny, cache):
    fast = load_tokenizer(tiny)
    messages = [{"role": "user", "content": "hé"}]
    ref = _reference(tiny)
    assert fast.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        ref.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert fast("ab", return_tensors="pt").input_ids.tolist() == ref("ab", return_tensors="pt").input_ids.tolist()
    assert isinstance(hf_tokenizer(fast), PreTrainedTokenizerFast)
    fast.chat_template = "{{ messages[0].content }}!"  # what --chat-template does, after the build too
    assert fast.hf.chat_template == fast.chat_template
    assert fast.apply_chat_template(messages, tokenize=False) == "hé!"


def test_copies_and_pickles_encode_the_same(tiny, cache):
    fast = load_tokenizer(tiny)
    for other in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert isinstance(other, FastTokenizer) and other.__dict__["_hf"] is None
        assert other.encode(TEXTS[3]) == fast.encode(TEXTS[3]) and other.chat_template == fast.chat_template


def test_a_warm_load_does_not_import_transformers(cache):
    load_tokenizer(default_model_path())
    code = ("import sys; from tokenmill.tokenizer import load_tokenizer; "
            "from tokenmill.loaders.default_model import default_model_path; "
            "t = load_tokenizer(default_model_path()); t.decode(t.encode('hi there')); "
            "print(type(t).__name__, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["FastTokenizer", "False"]


def test_a_changed_tokenizer_file_makes_a_new_snapshot(tiny, tmp_path, cache):
    directory = tmp_path / "m"
    directory.mkdir()
    for f in tiny.iterdir():
        (directory / f.name).write_bytes(f.read_bytes())
    assert load_tokenizer(directory).eos_token == "</s>"
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token"] = "<|user|>"
    config_path.write_text(json.dumps(config))
    assert load_tokenizer(directory).eos_token == "<|user|>"


def test_a_tokenizer_that_cleans_up_spaces_stays_transformers(tmp_path, cache):
    """WordPiece with clean_up_tokenization_spaces: the backend alone would decode differently."""
    vocab = {"[UNK]": 0, "hello": 1, ",": 2, "world": 3, ".": 4}
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", clean_up_tokenization_spaces=True)
    hf.save_pretrained(str(tmp_path))
    loaded = load_tokenizer(tmp_path)
    assert not isinstance(loaded, FastTokenizer) and isinstance(loaded, PreTrainedTokenizerFast)
    assert not isinstance(load_tokenizer(tmp_path), FastTokenizer)
