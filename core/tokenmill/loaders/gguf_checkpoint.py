"""Reads a GGUF file: metadata into a transformers-style config, tensors dequantized to float32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, dequantize

from tokenmill.errors import ModelLoadError
from tokenmill.loaders.gguf_blocks import FAST_TYPES, dequantize_blocks
from tokenmill.loaders.gguf_config import GGUF_ARCHITECTURES, architecture_config
from tokenmill.loaders.gguf_names import GGUFNames, TensorRef, needs_unpermute
from tokenmill.loaders.gguf_reader import PlainArrayReader
DEQUANTIZABLE = tuple(
    GGMLQuantizationType[name]
    for name in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "Q5_0", "Q5_1", "Q5_K",
                 "Q2_K", "Q3_K", "IQ4_XS", "IQ4_NL")
)


# GGUF tensors with no transformers counterpart that the loader absorbs (into the config).
_ABSORBED = frozenset({"rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"})
# Architectures whose converter stored every RMSNorm weight plus one (Gemma's norms scale by 1 + w).
_NORM_PLUS_ONE = frozenset({"gemma", "gemma2", "gemma3"})


class GGUFCheckpoint:
    """One GGUF file: `config` in transformers form, tensors by transformers name in HF layout."""

    loadable_dtypes = frozenset(q.name for q in DEQUANTIZABLE)

    def __init__(self, path: Path) -> None:
        self.source = str(path)
        self.path = path
        try:
            self.reader = PlainArrayReader(path)
        except Exception as exc:  # gguf raises ValueError/struct errors/IndexError on bad files
            # a short file shows up as a tensor array that "cannot reshape" to its declared shape
            raise ModelLoadError(f"{path} is not a readable GGUF file: it is truncated or corrupt "
                                 f"({type(exc).__name__}: {exc}); download it again") from None

        self.gguf_arch = str(self._field("general.architecture"))
        if self.gguf_arch not in GGUF_ARCHITECTURES:
            raise ModelLoadError(
                f"{path}: GGUF architecture {self.gguf_arch!r} is not supported; "
                f"supported: {', '.join(sorted(GGUF_ARCHITECTURES))}"
            )
        self._by_gguf = {t.name: t for t in self.reader.tensors}
        self._map_names()
        self.config = self._config()

    def _map_names(self) -> None:
        """Every transformers spelling of every tensor (gguf_names.GGUFNames), canonical ones first."""
        a = self.gguf_arch
        names = GGUFNames(a, int(self._field(f"{a}.block_count", 0)))
        experts = int(self._field(f"{a}.expert_count", 0) or 0)
        self._refs: dict[str, TensorRef] = {}  # transformers name -> where its values are
        self._canonical: dict[TensorRef, str] = {}
        self._unmapped = []  # GGUF names with no transformers name, not absorbed either
        later = []
        for t in self.reader.tensors:
            aliases = names.aliases(t.name, experts)
            if not aliases and t.name not in _ABSORBED:
                self._unmapped.append(t.name)
            for hf_name, ref in aliases:
                if ref not in self._canonical:
                    self._canonical[ref] = hf_name
                    self._refs.setdefault(hf_name, ref)
                else:
                    later.append((hf_name, ref))
        for hf_name, ref in later:  # another tensor's canonical name wins over an alias
            self._refs.setdefault(hf_name, ref)
        self._tensors = {name: self._by_gguf[ref.gguf_name] for name, ref in self._refs.items()}

    def _field(self, key: str, default: Any = None) -> Any:
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def _config(self) -> dict[str, Any]:
        """The metadata as a config.json dict, so one parser serves both formats."""
        a = self.gguf_arch
        heads = self._field(f"{a}.attention.head_count")
        cfg = {
            "vocab_size": self._field(f"{a}.vocab_size") or len(self._field("tokenizer.ggml.tokens", [])),
            "hidden_size": self._field(f"{a}.embedding_length"),
            "intermediate_size": self._field(f"{a}.feed_forward_length"),
            "num_hidden_layers": self._field(f"{a}.block_count"),
            "num_attention_heads": heads,
            "num_key_value_heads": self._field(f"{a}.attention.head_count_kv", heads),
            "head_dim": self._field(f"{a}.attention.key_length"),
            "rms_norm_eps": self._field(f"{a}.attention.layer_norm_rms_epsilon", 1e-6),
            "rope_theta": self._field(f"{a}.rope.freq_base", 10000.0),
            "max_position_embeddings": self._field(f"{a}.context_length"),
            "tie_word_embeddings": "output.weight" not in self._by_gguf,
            "bos_token_id": self._field("tokenizer.ggml.bos_token_id"),
            "eos_token_id": [
                i
                for key in ("eos_token_id", "eot_token_id", "eom_token_id")
                if (i := self._field(f"tokenizer.ggml.{key}")) is not None
            ],
        }
        cfg.update(self._rope_scaling())
        cfg.update(architecture_config(a, self._field))
        return cfg

    def _rope_scaling(self) -> dict[str, Any]:
        a = self.gguf_arch
        out: dict[str, Any] = {}
        kind = self._field(f"{a}.rope.scaling.type")
        if kind == "linear":
            out["rope_scaling"] = {"rope_type": "linear", "factor": float(self._field(f"{a}.rope.scaling.factor"))}
        elif kind not in (None, "none"):
            out["rope_scaling"] = {"rope_type": str(kind)}  # the config parser refuses it by name
        factors = next((t for t in self.reader.tensors if t.name == "rope_freqs.weight"), None)
        if factors is not None:  # llama3-style scaling, stored as per-pair divisors
            out["rope_freq_factors"] = dequantize(factors.data, factors.tensor_type).reshape(-1).tolist()
        return out

    def names(self) -> list[str]:
        """Every tensor (or expert of a merged experts tensor) by its canonical transformers name."""
        return list(self._canonical.values())

    def canonical_name(self, name: str) -> str:
        """The canonical name of the tensor `name` spells (itself when it is not one of ours)."""
        ref = self._refs.get(name)
        return name if ref is None else self._canonical[ref]

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The transformers-layout shape of `name` (GGUF stores dims reversed), or None if absent."""
        t = self._tensors.get(name)
        if t is None:
            return None
        dims = tuple(int(d) for d in reversed(t.shape.tolist()))
        return dims if self._refs[name].expert is None else dims[1:]

    def tensor(self, name: str) -> torch.Tensor:
        """`name` dequantized to float32, with llama.cpp's q/k row permutation (and Gemma's norm + 1) undone."""
        t, expert = self._tensors[name], self._refs[name].expert
        if t.tensor_type not in DEQUANTIZABLE:
            supported = ", ".join(q.name for q in DEQUANTIZABLE)
            raise ModelLoadError(
                f"{self.path}: tensor {t.name!r} is stored as {t.tensor_type.name}, which tokenmill cannot "
                f"dequantize (supported: {supported}); use a GGUF quantized with one of those"
            )
        shape = self.shape(name)
        raw = t.data if expert is None else t.data[expert]
        if t.tensor_type in FAST_TYPES:
            weights = dequantize_blocks(raw, t.tensor_type).reshape(shape)
        else:
            weights = np.asarray(dequantize(raw, t.tensor_type), dtype=np.float32).reshape(shape)
        if self.gguf_arch == "llama" and needs_unpermute(name):
            heads = self.config["num_attention_heads"] if ".q_proj." in name else self.config["num_key_value_heads"]
            weights = _unpermute(weights, heads)
        if self.gguf_arch in _NORM_PLUS_ONE and t.name.endswith("norm.weight"):
            weights = weights - np.float32(1)
        return torch.from_numpy(weights if weights.flags.writeable else np.array(weights))  # mmap views: copied

    def quant_type(self, name: str) -> str | None:
        """The GGUF storage type of `name` ("Q4_1", "Q8_0", ...), or None for F32/F16/BF16."""
        kind = self._tensors[name].tensor_type.name
        return None if kind in ("F32", "F16", "BF16") else kind

    def where(self, name: str) -> str:
        """The file holding `name`, for error messages."""
        return self.source

    def dtype(self, name: str) -> str:
        """The GGUF storage type of `name` ("F32", "Q4_1", "I32", ...)."""
        return self._tensors[name].tensor_type.name

    def unmapped(self) -> list[str]:
        """GGUF tensors with no transformers name that the loader does not absorb, by GGUF name."""
        return list(self._unmapped)


def _unpermute(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head interleave of rotary pairs: [Hh * D, ...] rows back to NeoX halves."""
    half = w.shape[0] // num_heads // 2
    return w.reshape(num_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
