"""FastTokenizer: a transformers fast tokenizer's encode/decode served from its `tokenizers` backend alone.

Importing transformers costs 1.3-2 s of process start, more than the model's weights take to load.
The engine's own calls (encode, decode, the vocabulary, the special tokens) need only the Rust
backend and a few attributes, which tokenizer_snapshot.py saves once from the real transformers
tokenizer. Everything else (apply_chat_template, padding, return_tensors, ...) is passed to the
transformers tokenizer, built from the same files on first use.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from tokenizers import Tokenizer

# Attributes the snapshot carries; the rest come from the transformers tokenizer on first use.
SNAPSHOT_ATTRS = (
    "bos_token", "bos_token_id", "eos_token", "eos_token_id", "pad_token", "pad_token_id", "unk_token",
    "unk_token_id", "special_tokens_map", "all_special_tokens", "all_special_ids", "model_max_length",
    "name_or_path", "padding_side", "truncation_side", "split_special_tokens", "vocab_size", "chat_template",
)


class TokenEncoding(dict):
    """What calling the tokenizer returns: a dict with input_ids and attention_mask, read as attributes too."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class FastTokenizer:
    """Duck-types transformers' PreTrainedTokenizerFast; `.hf` is the real one, built on first need.

    backend: the `tokenizers.Tokenizer` whose state equals the transformers tokenizer's own
    (truncation and padding off, as transformers sets them per call). attrs: SNAPSHOT_ATTRS'
    values. build_hf: returns the transformers tokenizer (a closure over the model's files).
    """

    clean_up_tokenization_spaces = False  # snapshots are only taken where transformers' decode skips it
    is_fast = True

    def __init__(self, backend: Tokenizer, attrs: dict[str, Any], build_hf: Callable[[], Any],
                 hf: Any = None) -> None:
        self._backend = backend
        self._attrs = dict(attrs)
        self._build_hf = build_hf
        self._hf = hf
        self._lock = threading.Lock()

    # -- the engine's calls, from the backend ------------------------------------------------------

    def __call__(self, text: str | list[str], text_pair: Any = None, add_special_tokens: bool = True,
                 **kwargs: Any) -> Any:
        if kwargs or text_pair is not None or not _is_text(text):
            return self.hf(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)
        if isinstance(text, str):
            ids = self._backend.encode(text, add_special_tokens=add_special_tokens).ids
            return TokenEncoding(input_ids=ids, attention_mask=[1] * len(ids))
        rows = [e.ids for e in self._backend.encode_batch(text, add_special_tokens=add_special_tokens)]
        return TokenEncoding(input_ids=rows, attention_mask=[[1] * len(r) for r in rows])

    def encode(self, text: str, text_pair: Any = None, add_special_tokens: bool = True, **kwargs: Any) -> list[int]:
        if kwargs or text_pair is not None or not isinstance(text, str):
            return self.hf.encode(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids: Any, skip_special_tokens: bool = False, **kwargs: Any) -> str:
        if kwargs.get("clean_up_tokenization_spaces") or set(kwargs) - {"clean_up_tokenization_spaces"}:
            return self.hf.decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)
        return self._backend.decode(_id_list(token_ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False, **kwargs: Any) -> list[str]:
        return [self.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs) for ids in sequences]

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> Any:
        if skip_special_tokens:
            return self.hf.convert_ids_to_tokens(ids, skip_special_tokens=True)
        if _is_one_id(ids):
            return self._backend.id_to_token(int(ids))
        return [self._backend.id_to_token(i) for i in _id_list(ids)]

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self._token_id(tokens)
        return [self._token_id(t) for t in tokens]

    def _token_id(self, token: str) -> int:
        index = self._backend.token_to_id(token)
        return self._attrs["unk_token_id"] if index is None else index

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._backend

    @property
    def chat_template(self) -> Any:
        return self._attrs.get("chat_template")

    @chat_template.setter
    def chat_template(self, value: Any) -> None:
        self._attrs["chat_template"] = value
        if self._hf is not None:
            self._hf.chat_template = value

    # -- everything else, from transformers --------------------------------------------------------

    @property
    def hf(self) -> Any:
        """The transformers tokenizer (built, and transformers imported, on the first call)."""
        with self._lock:
            if self._hf is None:
                hf = self._build_hf()
                hf.chat_template = self._attrs.get("chat_template")
                self._hf = hf
        return self._hf

    def prefetch(self) -> None:
        """Build `.hf` in a background thread (a server does this while it waits for its first request)."""
        threading.Thread(target=lambda: self.hf, name="tokenizer-prefetch", daemon=True).start()

    def apply_chat_template(self, *args: Any, **kwargs: Any) -> Any:
        return self.hf.apply_chat_template(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attrs = self.__dict__.get("_attrs")
        if attrs is None or name.startswith("__"):
            raise AttributeError(name)
        if name in attrs:
            return attrs[name]
        return getattr(self.hf, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"backend": self._backend, "attrs": self._attrs, "build_hf": self._build_hf}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["backend"], state["attrs"], state["build_hf"])

    def __repr__(self) -> str:
        return f"FastTokenizer(name_or_path={self._attrs.get('name_or_path')!r}, vocab={len(self)})"


def _is_text(text: Any) -> bool:
    """A string or a list of strings: what the backend encodes as transformers would."""
    return isinstance(text, str) or (isinstance(text, list) and all(isinstance(t, str) for t in text))


def _is_one_id(ids: Any) -> bool:
    """An int, or a numpy/torch scalar."""
    return isinstance(ids, int) or getattr(ids, "ndim", None) == 0


def _id_list(ids: Any) -> list[int]:
    """Token ids from an int, a sequence, or a numpy/torch array, as a list of ints."""
    if _is_one_id(ids):
        return [int(ids)]
    if hasattr(ids, "tolist"):
        return ids.tolist()
    return [int(i) for i in ids]


def hf_tokenizer(tokenizer: Any) -> Any:
    """The transformers tokenizer behind `tokenizer` (itself when it already is one), for libraries
    such as xgrammar that check its type."""
    return tokenizer.hf if isinstance(tokenizer, FastTokenizer) else tokenizer
