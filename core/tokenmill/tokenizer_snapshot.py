"""Tokenizer snapshots: a transformers tokenizer's backend state and attributes, saved for FastTokenizer.

A snapshot is taken only where FastTokenizer reproduces the transformers tokenizer exactly: its
class keeps the plain fast tokenizer's encode and decode methods, and probe texts encode and decode
the same both ways (this catches clean_up_tokenization_spaces and truncation or padding settings).
Otherwise the caller keeps using the transformers tokenizer itself.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from tokenmill.fast_tokenizer import SNAPSHOT_ATTRS

FORMAT = 1
BACKEND_FILE = "backend.json"
ATTRS_FILE = "snapshot.json"  # written last: its presence marks a complete snapshot
_METHODS = ("__call__", "encode", "decode", "_decode", "_encode_plus", "convert_ids_to_tokens",
            "convert_tokens_to_ids", "get_vocab", "__len__", "batch_decode")
_PROBES = ("Hello, world!", " leading space and trailing ", "tab\tand\nnewlines\n\n", "Hé 世界 🙂 ½",
           "Hello , world . it 's n't", "   ", "")
logger = logging.getLogger(__name__)


def read(entry: Path) -> tuple[Tokenizer, dict[str, Any]] | None:
    """(backend, attrs) from a snapshot directory, or None when it has none (or an unreadable one)."""
    attrs_path = entry / ATTRS_FILE
    if not attrs_path.is_file():
        return None
    try:
        attrs = json.loads(attrs_path.read_text(encoding="utf-8"))
        if attrs.pop("format", None) != FORMAT:
            return None
        return backend_from_str((entry / BACKEND_FILE).read_text(encoding="utf-8"), attrs), attrs
    except Exception as exc:  # OSError, bad JSON, or the tokenizers library's own Exception
        logger.warning("ignoring the unreadable tokenizer snapshot in %s (%s)", entry, exc)
        return None


def backend_from_str(text: str, attrs: dict[str, Any]) -> Tokenizer:
    backend = Tokenizer.from_str(text)
    backend.no_truncation()
    backend.no_padding()
    backend.encode_special_tokens = bool(attrs.get("split_special_tokens"))
    return backend


def capture(hf: Any) -> tuple[Tokenizer, dict[str, Any]] | None:
    """(backend, attrs) equal to `hf`'s encode and decode, or None where they would differ."""
    from transformers import PreTrainedTokenizerFast  # the caller has already built `hf`

    if not isinstance(hf, PreTrainedTokenizerFast):
        return None
    if any(getattr(type(hf), m, None) is not getattr(PreTrainedTokenizerFast, m, None) for m in _METHODS):
        return None
    attrs = _attrs(hf)
    backend = backend_from_str(hf.backend_tokenizer.to_str(), attrs)
    return (backend, attrs) if _agrees(hf, backend, attrs) else None


def write(entry: Path, backend: Tokenizer, attrs: dict[str, Any]) -> None:
    """Save atomically, file by file, the attributes last; a read-only cache only costs speed."""
    try:
        entry.mkdir(parents=True, exist_ok=True)
        _replace(entry / BACKEND_FILE, backend.to_str())
        _replace(entry / ATTRS_FILE, json.dumps({"format": FORMAT, **attrs}))
    except OSError as exc:
        logger.warning("could not save the tokenizer snapshot under %s (%s); transformers loads it each time",
                       entry, exc)


def _attrs(hf: Any) -> dict[str, Any]:
    attrs = {}
    for name in SNAPSHOT_ATTRS:
        value = getattr(hf, name, None)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue  # not JSON (an AddedToken, say): FastTokenizer asks transformers for it
        attrs[name] = value
    return attrs


def _agrees(hf: Any, backend: Tokenizer, attrs: dict[str, Any]) -> bool:
    specials = [t for t in (attrs.get("bos_token"), attrs.get("eos_token")) if isinstance(t, str)]
    for text in (*_PROBES, *(f"{t} after {t}" for t in specials)):
        for add in (True, False):
            ids = hf(text, add_special_tokens=add).input_ids
            if backend.encode(text, add_special_tokens=add).ids != ids:
                return False
            for skip in (True, False):
                if backend.decode(ids, skip_special_tokens=skip) != hf.decode(ids, skip_special_tokens=skip):
                    return False
    return len(hf) == backend.get_vocab_size(with_added_tokens=True)


def _replace(path: Path, text: str) -> None:
    fd, staging = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(staging, path)
    except OSError:
        Path(staging).unlink(missing_ok=True)
        raise
