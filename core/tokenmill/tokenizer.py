"""Loads a model's fast tokenizer and chat template, from a model directory or a GGUF's metadata.

Building a tokenizer from GGUF metadata takes seconds, so the converted tokenizer is saved once
under $TOKENMILL_CACHE_DIR (default ~/.cache/tokenmill), keyed by the file's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tokenmill.errors import ModelLoadError

ENV_CACHE_DIR = "TOKENMILL_CACHE_DIR"
logger = logging.getLogger(__name__)


def load_tokenizer(source: Path) -> PreTrainedTokenizerFast:
    """The fast tokenizer for a model directory or .gguf file; `.chat_template` set when it has one."""
    if source.is_dir():
        return _from_directory(source)
    cached = _cache_dir() / _cache_key(source)
    if (cached / "tokenizer.json").is_file():
        return _from_directory(cached)
    tokenizer = _from_gguf(source)
    _store(tokenizer, cached)
    return tokenizer


def _from_directory(directory: Path) -> PreTrainedTokenizerFast:
    if not any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise ModelLoadError(
            f"{directory} has no tokenizer (tokenizer.json); copy the model's tokenizer files into it"
        )
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


def _from_gguf(path: Path) -> PreTrainedTokenizerFast:
    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise ModelLoadError(f"{path}: no usable tokenizer in the GGUF metadata ({exc})") from None


def _cache_dir() -> Path:
    root = os.environ.get(ENV_CACHE_DIR) or os.path.join(os.path.expanduser("~"), ".cache", "tokenmill")
    return Path(root) / "gguf-tokenizers"


def _cache_key(path: Path) -> str:
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|transformers {transformers.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _store(tokenizer: PreTrainedTokenizerFast, target: Path) -> None:
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
