"""Resolves Hugging Face Hub model ids (org/name) to local files: the HF cache first, then a download.

huggingface_hub does the work (cache layout, revisions, auth tokens, HF_HUB_OFFLINE, HF_HOME);
this module decides what to fetch and turns its exceptions into messages that say what to do.
An id names a safetensors repository (`org/name`) or one GGUF file in a repository
(`org/name/file.gguf`, since GGUF repositories hold one file per quantization).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tokenmill.errors import ModelLoadError

# What a safetensors model needs; pickle weights and other formats are never fetched.
MODEL_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"]
TOKENIZER_PATTERNS = ["tokenizer*", "vocab.json", "merges.txt", "special_tokens_map.json", "*.jinja",
                      "config.json", "generation_config.json"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.-]+\.gguf)?")


def model_path(model: str, revision: str | None = None, *, tokenizer_only: bool = False) -> Path:
    """The local path of `model`: itself when it is not a Hub id, else its files in the HF cache."""
    if is_hub_id(model):
        return resolve_hub_model(model, revision, tokenizer_only=tokenizer_only)
    return Path(model).expanduser()


def is_hub_id(model: str) -> bool:
    """True for `org/name` or `org/name/file.gguf` that is not an existing local path."""
    if model.startswith((".", "/", "~")) or Path(model).exists():
        return False
    return _HUB_ID.fullmatch(model) is not None


def resolve_hub_model(model_id: str, revision: str | None = None, *, tokenizer_only: bool = False) -> Path:
    """A local directory (or .gguf file) for a Hub id, from the HF cache or, failing that, the Hub.

    `tokenizer_only` fetches the tokenizer's files alone (no weights), for --tokenizer.
    """
    repo_id, filename = _split(model_id)
    patterns = TOKENIZER_PATTERNS if tokenizer_only else MODEL_PATTERNS
    try:
        return _fetch(repo_id, filename, revision, patterns, local_only=True)
    except _not_cached_errors():
        pass
    if _offline():
        raise ModelLoadError(f"{_what(model_id, revision)} is not in the Hugging Face cache ({_cache_text()}) and "
                             f"HF_HUB_OFFLINE is set; {_download_hint(model_id, revision)}") from None
    try:
        return _fetch(repo_id, filename, revision, patterns, local_only=False)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one message; the cause is kept in it
        raise _hub_error(model_id, revision, exc) from None


def _split(model_id: str) -> tuple[str, str | None]:
    """(repository id, GGUF file name or None)."""
    parts = model_id.split("/")
    return "/".join(parts[:2]), parts[2] if len(parts) == 3 else None


def _fetch(repo_id: str, filename: str | None, revision: str | None, patterns: list[str], *,
           local_only: bool) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    if filename is not None:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=_cache_dir(),
                                    local_files_only=local_only))
    path = Path(snapshot_download(repo_id, revision=revision, cache_dir=_cache_dir(),
                                  allow_patterns=patterns, local_files_only=local_only))
    if patterns is MODEL_PATTERNS and not (path / "config.json").is_file():
        raise ModelLoadError(_not_a_model(repo_id, path))
    return path


def _not_a_model(repo_id: str, path: Path) -> str:
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if not ggufs and not _offline():
        from huggingface_hub import list_repo_files

        try:
            ggufs = sorted(f for f in list_repo_files(repo_id) if f.endswith(".gguf"))
        except Exception:  # noqa: BLE001 - only a hint
            ggufs = []
    if ggufs:
        return (f"{repo_id} holds GGUF files, not a safetensors model; name one of them: "
                + ", ".join(f"{repo_id}/{g}" for g in ggufs[:6]))
    return f"{repo_id} has no config.json; tokenmill loads safetensors models (config.json + *.safetensors) or GGUF"


def _not_cached_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import LocalEntryNotFoundError

    return (LocalEntryNotFoundError, FileNotFoundError)


def _hub_error(model_id: str, revision: str | None, exc: Exception) -> ModelLoadError:
    from huggingface_hub import errors

    what = _what(model_id, revision)
    if isinstance(exc, ModelLoadError):
        return exc
    if isinstance(exc, errors.LocalEntryNotFoundError):  # raised when the Hub could not be reached
        return _unreachable(what, model_id, revision, exc)
    if isinstance(exc, errors.GatedRepoError):
        return ModelLoadError(f"{what} is gated: accept its licence on huggingface.co, then log in with "
                              "`hf auth login` or set HF_TOKEN")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return ModelLoadError(f"{what} is neither a local path nor a model on the Hugging Face Hub (for a "
                              "private model, log in with `hf auth login` or set HF_TOKEN)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return ModelLoadError(f"{what}: the Hub has no revision {revision!r}; give a branch, tag or commit it has")
    if isinstance(exc, errors.EntryNotFoundError):
        return ModelLoadError(f"{what}: the repository has no such file; list it with `hf download --dry-run`")
    return _unreachable(what, model_id, revision, exc)


def _unreachable(what: str, model_id: str, revision: str | None, exc: Exception) -> ModelLoadError:
    return ModelLoadError(f"cannot reach the Hugging Face Hub to download {what} ({type(exc).__name__}), and "
                          f"it is not in the local cache ({_cache_text()}); {_download_hint(model_id, revision)}")


def _download_hint(model_id: str, revision: str | None) -> str:
    repo_id, filename = _split(model_id)
    rev = f" --revision {revision}" if revision else ""
    file_arg = f" {filename}" if filename else ""
    return (f"download it first where the Hub is reachable (`hf download {repo_id}{file_arg}{rev}`) and copy "
            f"the cache here, or download to a directory (`hf download {repo_id}{file_arg}{rev} --local-dir DIR`) "
            "and pass that directory as the model")


def _what(model_id: str, revision: str | None) -> str:
    return f"Hub model {model_id!r}" + (f" at revision {revision!r}" if revision else "")


def _cache_dir() -> str | None:
    """$HF_HUB_CACHE, else $HF_HOME/hub, read now (huggingface_hub reads them once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _cache_text() -> str:
    return _cache_dir() or "~/.cache/huggingface/hub"


def _offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or constants.HF_HUB_OFFLINE
