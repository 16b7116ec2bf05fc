"""Loads a model's tokenizer and chat template, from a model directory or a GGUF's metadata.

The first load builds the transformers fast tokenizer (for a GGUF, converting its metadata takes
seconds) and saves it under $TOKENMILL_CACHE_DIR (default ~/.cache/tokenmill), keyed by the source
files' paths, sizes and mtimes and the transformers version: for a GGUF the converted tokenizer
files, and for either a snapshot (tokenizer_snapshot.py). Later loads read the snapshot into a
FastTokenizer without importing transformers, which saves 1.3-2 s of process start.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from tokenmill import tokenizer_snapshot
from tokenmill.errors import ModelLoadError
from tokenmill.fast_tokenizer import FastTokenizer

ENV_CACHE_DIR = "TOKENMILL_CACHE_DIR"
_DIRECTORY_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt",
                    "vocab.txt", "config.json")
logger = logging.getLogger(__name__)


def load_tokenizer(source: Path) -> Any:
    """The tokenizer for a model directory or .gguf file; `.chat_template` set when it has one.

    A FastTokenizer where a snapshot reproduces transformers exactly, else the transformers
    PreTrainedTokenizerFast itself.
    """
    entry = cache_dir() / _cache_key(source)
    build = partial(_build_hf, str(source), str(entry))
    snapshot = tokenizer_snapshot.read(entry)
    if snapshot is not None:
        return FastTokenizer(*snapshot, build)
    hf = build()
    captured = tokenizer_snapshot.capture(hf)
    if captured is None:
        return hf
    tokenizer_snapshot.write(entry, *captured)
    return FastTokenizer(*captured, build, hf=hf)


def _build_hf(source: str, entry: str) -> Any:
    """The transformers tokenizer; a GGUF's is converted once and kept in its cache entry."""
    path, cached = Path(source), Path(entry)
    if path.is_dir():
        return _from_directory(path)
    if (cached / "tokenizer.json").is_file():
        return _from_directory(cached)
    tokenizer = _from_gguf(path)
    _store(tokenizer, cached)
    return tokenizer


def _from_directory(directory: Path) -> Any:
    if not any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise ModelLoadError(
            f"{directory} has no tokenizer (tokenizer.json); copy the model's tokenizer files into it"
        )
    from transformers import AutoTokenizer, PreTrainedTokenizerFast  # slow: only on a first load

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"the tokenizer in {directory} could not be loaded ({exc})") from None
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ModelLoadError(
            f"{directory} gives only a slow {type(tokenizer).__name__}; "
            f"tokenmill needs a fast tokenizer (tokenizer.json)"
        )
    return tokenizer


def _from_gguf(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise ModelLoadError(f"{path}: no usable tokenizer in the GGUF metadata ({exc})") from None


def cache_dir() -> Path:
    root = os.environ.get(ENV_CACHE_DIR) or os.path.join(os.path.expanduser("~"), ".cache", "tokenmill")
    return Path(root) / "tokenizers"


def _cache_key(source: Path) -> str:
    files = [source / name for name in _DIRECTORY_FILES] if source.is_dir() else [source]
    stamps = [f"{f.name}:{s.st_size}:{s.st_mtime_ns}" for f in files if f.is_file() and (s := f.stat())]
    text = "|".join([str(source.resolve()), *stamps, f"transformers {_transformers_version()}",
                     f"snapshot {tokenizer_snapshot.FORMAT}"])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _transformers_version() -> str:
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _store(tokenizer: Any, target: Path) -> None:
    """Save atomically (write to a temp dir, then rename); a read-only cache only costs speed."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent))
    except OSError as exc:
        logger.warning("cannot cache the GGUF tokenizer under %s (%s); it is rebuilt on each load", target, exc)
        return
    try:
        tokenizer.save_pretrained(str(staging))
        staging.rename(target)
    except OSError as exc:  # includes losing a race with another process writing the same entry
        logger.warning("could not cache the GGUF tokenizer under %s (%s)", target, exc)
        shutil.rmtree(staging, ignore_errors=True)
