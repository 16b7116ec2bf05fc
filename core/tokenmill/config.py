"""EngineArgs: every engine option in one self-validating dataclass, shared by the API and the CLI."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from tokenmill.errors import TokenmillError

DTYPES = ("auto", "float32", "bfloat16", "float16")
KV_CACHE_DTYPES = ("auto", "float32", "bfloat16", "float16")  # auto: the model's dtype
QUANTIZATIONS = ("auto", "none", "int4", "int8")  # loaders/quantization.py says what each packs


@dataclass(slots=True)
class EngineArgs:
    """Options of one engine. Names follow vLLM's so that flags carry over."""

    model: str | None = None  # HF directory or .gguf file; None: the embedded SmolLM2 default
    dtype: str = "auto"  # auto: the platform's preferred dtype (bfloat16 on GPUs, float32 on AVX2 CPUs)
    quantization: str = "auto"  # auto: keep a GGUF's 4/8-bit layers packed where the platform can; none: dense
    kv_cache_dtype: str = "auto"  # the KV cache's dtype; auto: the model's (bfloat16 halves attention's traffic)
    device: str | None = None  # plugin name; None: $TOKENMILL_DEVICE or the best available
    block_size: int = 16
    kv_cache_memory: int | None = None  # bytes for the KV pool; None: the allocator's default
    gpu_memory_utilization: float = 0.9  # share of an accelerator's memory tokenmill may fill
    enable_prefix_caching: bool = True
    max_num_batched_tokens: int = 2048  # token budget of one step
    max_num_seqs: int = 256
    max_model_len: int | None = None  # None: the model's own context length
    seed: int = 0
    enforce_eager: bool = False
    num_threads: int | None = None  # CPU compute threads; None: torch's default

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise TokenmillError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise TokenmillError(f"--kv-cache-dtype {self.kv_cache_dtype!r} is not one of {', '.join(KV_CACHE_DTYPES)}")
        check_quantization(self.quantization)
        for name in ("block_size", "max_num_batched_tokens", "max_num_seqs"):
            if getattr(self, name) < 1:
                raise TokenmillError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.block_size & (self.block_size - 1):
            raise TokenmillError(f"--block-size must be a power of two, got {self.block_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise TokenmillError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise TokenmillError(f"--max-model-len must be positive, got {self.max_model_len}")

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        """Add the engine's flags to a CLI parser (model is left to the caller)."""
        parser.add_argument("--dtype", default="auto", choices=DTYPES)
        parser.add_argument("-q", "--quantization", default="auto", choices=QUANTIZATIONS,
                            help="auto: run a GGUF's 4-/8-bit layers packed where the platform has kernels; "
                                 "none: dense in --dtype; int4/int8: pack every linear layer")
        parser.add_argument("--kv-cache-dtype", default="auto", choices=KV_CACHE_DTYPES,
                            help="dtype of the KV cache (default: auto, the model's dtype)")
        parser.add_argument("--device", default=None, help="plugin to run on (default: $TOKENMILL_DEVICE or the best available)")
        parser.add_argument("--block-size", type=int, default=16)
        parser.add_argument("--kv-cache-memory", type=_parse_bytes, default=None, help="KV pool size, e.g. 2GiB or 500MB")
        parser.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                            help="share of an accelerator's memory for weights, activations and the KV cache")
        parser.add_argument("--no-prefix-caching", dest="enable_prefix_caching", action="store_false")
        parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
        parser.add_argument("--max-num-seqs", type=int, default=256)
        parser.add_argument("--max-model-len", type=int, default=None)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--enforce-eager", action="store_true")
        parser.add_argument("--num-threads", type=int, default=None)

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "EngineArgs":
        """Build from a parsed namespace, taking every field the namespace has."""
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)})


def check_quantization(quantization: str) -> None:
    """Refuse an unknown --quantization value, listing the known ones."""
    if quantization not in QUANTIZATIONS:
        raise TokenmillError(f"--quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")


def _parse_bytes(text: str) -> int:
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1}
    lowered = text.strip().lower()
    for suffix, scale in units.items():
        if lowered.endswith(suffix):
            return int(float(lowered[: -len(suffix)]) * scale)
    return int(lowered)
