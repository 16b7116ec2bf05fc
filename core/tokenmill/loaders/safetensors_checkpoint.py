"""Reads a Hugging Face model directory: config.json plus single or sharded *.safetensors files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from tokenmill.errors import ModelLoadError

INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def refuse_pickle(path: Path) -> ModelLoadError:
    """The error for a pickle checkpoint, which could run arbitrary code when loaded."""
    return ModelLoadError(
        f"{path} is a pickle checkpoint ({path.suffix}); tokenmill refuses pickles because loading one can "
        f"run arbitrary code. Convert it to safetensors (e.g. model.save_pretrained(dir, safe_serialization=True) "
        f"in transformers) or use a .gguf file"
    )


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict; an unreadable or malformed file raises ModelLoadError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is missing; a model directory needs config.json and *.safetensors") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} could not be read as JSON ({exc}); download it again") from None


class SafetensorsCheckpoint:
    """Memory-mapped tensors of a model directory, by transformers name; every file is checked at open."""

    loadable_dtypes = frozenset({"F64", "F32", "F16", "BF16"})

    def __init__(self, directory: Path) -> None:
        self.source = str(directory)
        self.directory = directory
        self.config = read_json(directory / "config.json")
        self._merge_generation_eos()
        self._file_of: dict[str, Path] = {}  # tensor name -> shard file
        self._handles: dict[Path, Any] = {}
        for path in self._shard_files():
            handle = _open(path)
            self._handles[path] = handle
            for name in handle.keys():
                self._file_of[name] = path

    def _shard_files(self) -> list[Path]:
        index = self.directory / INDEX_FILE
        if index.exists():
            weight_map = read_json(index).get("weight_map") or {}
            files = sorted({self.directory / f for f in weight_map.values()})
            missing = [f.name for f in files if not f.exists()]
            if missing:
                raise ModelLoadError(
                    f"{self.directory} is missing shard file(s) {', '.join(missing)} listed in {INDEX_FILE} "
                    f"({len(files)} shards in all); download the missing shard(s) again"
                )
            return files
        files = sorted(self.directory.glob("*.safetensors"))
        if files:
            return files
        pickles = sorted(p for p in self.directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise refuse_pickle(pickles[0])
        raise ModelLoadError(f"{self.directory} has config.json but no *.safetensors weights")

    def _merge_generation_eos(self) -> None:
        """generation_config.json often lists more stop tokens (e.g. Llama 3's <|eot_id|>)."""
        gen_path = self.directory / "generation_config.json"
        if not gen_path.exists():
            return
        extra = read_json(gen_path).get("eos_token_id")
        if extra is None:
            return
        ids = _as_list(self.config.get("eos_token_id")) + [i for i in _as_list(extra)]
        self.config["eos_token_id"] = list(dict.fromkeys(ids))

    def names(self) -> list[str]:
        """Every tensor name in the checkpoint."""
        return list(self._file_of)

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The stored shape of `name`, or None when the checkpoint lacks it."""
        path = self._file_of.get(name)
        return None if path is None else tuple(self._handles[path].get_slice(name).get_shape())

    def tensor(self, name: str) -> torch.Tensor:
        """`name` in its stored dtype, read from the memory map."""
        path = self._file_of[name]
        try:
            return self._handles[path].get_tensor(name)
        except SafetensorError as exc:
            raise ModelLoadError(f"{path}: tensor {name!r} could not be read ({exc}); download it again") from None

    def quant_type(self, name: str) -> str | None:
        """Always None: tokenmill reads float safetensors only."""
        return None

    def dtype(self, name: str) -> str:
        """The stored dtype as safetensors names it ("F32", "BF16", "I32", ...)."""
        return self._handles[self._file_of[name]].get_slice(name).get_dtype()

    def unmapped(self) -> list[str]:
        """Always empty: safetensors tensors carry transformers names already."""
        return []

    def where(self, name: str) -> str:
        """The file that holds (or should hold) `name`, for error messages."""
        path = self._file_of.get(name)
        return str(path) if path is not None else self.source


def _open(path: Path) -> Any:
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except SafetensorError as exc:
        raise ModelLoadError(
            f"{path} is not a valid safetensors file ({exc}); it is probably truncated or corrupt: download it again"
        ) from None
    except OSError as exc:
        raise ModelLoadError(f"{path} could not be opened ({exc})") from None


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
