"""Reads a GGUF file: metadata into a transformers-style config, tensors dequantized to float32."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, dequantize

from tokenmill.errors import ModelLoadError
from tokenmill.loaders.gguf_blocks import FAST_TYPES, dequantize_blocks
from tokenmill.loaders.gguf_experts import expert_tensors, moe_config, moe_style
from tokenmill.loaders.gguf_names import gguf_to_hf_name, needs_unpermute

# llama.cpp architecture name -> transformers architecture
GGUF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
GGUF_ARCHITECTURES.update({"qwen2moe": "Qwen2MoeForCausalLM", "qwen3moe": "Qwen3MoeForCausalLM"})  # gguf_experts.py
DEQUANTIZABLE = tuple(
    GGMLQuantizationType[name]
    for name in ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "Q5_0", "Q5_1", "Q5_K")
)


class _PlainArrayReader(GGUFReader):
    """GGUFReader over a plain-ndarray view of its memory map: the same bytes, but slicing skips
    np.memmap's per-slice Python hooks, which make parsing a 50k-token vocabulary take seconds.
    Arrays (the vocabulary and merges are ~100k strings) are parsed in one pass: strings become
    memoryview slices, which answer the `nbytes`, `tobytes()` and `bytes()` that the reader and
    ReaderField.contents() use, and a numeric array is one part instead of one per element. Both
    give contents() the same values (a test compares); reading the default model's header went from
    ~1.2 s to ~0.7 s."""

    @property
    def data(self) -> np.ndarray:
        return self._plain_data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._plain_data = value.view(np.ndarray) if isinstance(value, np.memmap) else value
        self._bytes = memoryview(self._plain_data).cast("B")

    def _get_str(self, offset: int) -> tuple[Any, Any]:
        if self.byte_order != "I":  # a file of the other byte order: the library's own path
            return super()._get_str(offset)
        size = self._bytes[offset : offset + 8]
        return size, self._bytes[offset + 8 : offset + 8 + int.from_bytes(size, sys.byteorder)]

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[Any]]:
        if self.byte_order != "I" or raw_type != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        head = self._bytes[orig_offs : orig_offs + 12]  # item type (uint32), count (uint64)
        item_type = GGUFValueType(int.from_bytes(head[:4], sys.byteorder))
        count = int.from_bytes(head[4:], sys.byteorder)
        types = [GGUFValueType.ARRAY] + ([item_type] if count else [])
        if item_type == GGUFValueType.STRING:
            parts, offs = [head], orig_offs + 12
            for _ in range(count):
                size, text = self._get_str(offs)
                parts += (size, text)
                offs += 8 + text.nbytes
            return offs - orig_offs, parts, list(range(2, 2 + 2 * count, 2)), types
        nptype = self.gguf_scalar_to_np.get(item_type)
        if nptype is None:  # arrays of arrays: the library's path
            return super()._get_field_parts(orig_offs, raw_type)
        values = self._get(orig_offs + 12, nptype, count)
        return 12 + int(values.nbytes), [head, values], [1], types


# GGUF tensors with no transformers counterpart that the loader absorbs (into the config).
_ABSORBED = frozenset({"rope_freqs.weight"})


class GGUFCheckpoint:
    """One GGUF file: `config` in transformers form, tensors by transformers name in HF layout."""

    loadable_dtypes = frozenset(q.name for q in DEQUANTIZABLE)

    def __init__(self, path: Path) -> None:
        self.source = str(path)
        self.path = path
        try:
            self.reader = _PlainArrayReader(path)
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
        self._tensors = {}  # transformers name -> ReaderTensor
        self._unmapped = []  # GGUF names with no transformers name, not absorbed either
        style = moe_style(self.gguf_arch, self._field)
        for t in self.reader.tensors:
            experts = expert_tensors(t, style)  # MoE routers, shared experts and stacked experts
            if experts is not None:
                self._tensors.update(experts)
                continue
            name = gguf_to_hf_name(t.name)
            if name is not None:
                self._tensors[name] = t
            elif t.name not in _ABSORBED:
                self._unmapped.append(t.name)
        self.config = self._config()

    def _field(self, key: str, default: Any = None) -> Any:
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def _config(self) -> dict[str, Any]:
        """The metadata as a config.json dict, so one parser serves both formats."""
        a = self.gguf_arch
        heads = self._field(f"{a}.attention.head_count")
        cfg = {
            "architectures": [GGUF_ARCHITECTURES[a]],
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
            "tie_word_embeddings": "lm_head.weight" not in self._tensors,
            "bos_token_id": self._field("tokenizer.ggml.bos_token_id"),
            "eos_token_id": [
                i
                for key in ("eos_token_id", "eot_token_id", "eom_token_id")
                if (i := self._field(f"tokenizer.ggml.{key}")) is not None
            ],
        }
        cfg.update(self._rope_scaling())
        cfg.update(moe_config(a, self._field))
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
        """Every tensor name, translated to transformers' names."""
        return list(self._tensors)

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The transformers-layout shape of `name` (GGUF stores dims reversed), or None if absent."""
        t = self._tensors.get(name)
        return None if t is None else tuple(int(d) for d in reversed(t.shape.tolist()))

    def tensor(self, name: str) -> torch.Tensor:
        """`name` dequantized to float32, with llama.cpp's q/k row permutation undone."""
        t = self._tensors[name]
        if t.tensor_type not in DEQUANTIZABLE:
            supported = ", ".join(q.name for q in DEQUANTIZABLE)
            raise ModelLoadError(
                f"{self.path}: tensor {t.name!r} is stored as {t.tensor_type.name}, which tokenmill cannot "
                f"dequantize (supported: {supported}); use a GGUF quantized with one of those"
            )
        shape = self.shape(name)
        if t.tensor_type in FAST_TYPES:
            weights = dequantize_blocks(t.data, t.tensor_type).reshape(shape)
        else:
            weights = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        if self.gguf_arch == "llama" and needs_unpermute(name):
            heads = self.config["num_attention_heads"] if ".q_proj." in name else self.config["num_key_value_heads"]
            weights = _unpermute(weights, heads)
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
