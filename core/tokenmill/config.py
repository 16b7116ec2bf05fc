"""EngineArgs: every engine option in one self-validating dataclass, shared by the API and the CLI."""

from __future__ import annotations

import argparse
import logging
import os
import re
from dataclasses import dataclass, field, fields

from tokenmill.errors import TokenmillError

DTYPES = ("auto", "float32", "bfloat16", "float16")
KV_CACHE_DTYPES = ("auto", "float32", "bfloat16", "float16")  # auto: the model's dtype
DTYPE_ALIASES = {"half": "float16", "float": "float32"}  # vLLM's
QUANTIZATIONS = ("auto", "none", "int4", "int8")
EXECUTOR_BACKENDS = ("mp", "ray")  # parallel/executor: spawned processes on one host, or Ray actors  # loaders/quantization.py says what each packs
BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
ENV_GPU_MEMORY_UTILIZATION = "TOKENMILL_GPU_MEMORY_UTILIZATION"
BYTE_UNITS_TEXT = "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EngineArgs:
    """Options of one engine. Names follow vLLM's so that flags carry over."""

    model: str | None = None  # HF directory, .gguf file or Hub id (org/name); None: the embedded SmolLM2
    tokenizer: str | None = None  # directory, .gguf or Hub id to take the tokenizer from; None: the model's
    revision: str | None = None  # Hub branch, tag or commit for a Hub id; None: main
    chat_template: str | None = None  # a Jinja template, or a file holding one; None: the model's own
    dtype: str = "auto"  # auto: the platform's preferred dtype (bfloat16 on GPUs, float32 on AVX2 CPUs)
    quantization: str = "auto"  # auto: keep a GGUF's 4/8-bit layers packed where the platform can; none: dense
    kv_cache_dtype: str = "auto"  # the KV cache's dtype; auto: the model's, or under --dtype auto the platform's pick
    device: str | None = None  # plugin name; None: $TOKENMILL_DEVICE or the best available
    block_size: int = 16
    kv_cache_memory: int | str | None = None  # bytes (or "2GiB") for the KV pool; None: the allocator's default
    # share of an accelerator's memory tokenmill may fill; default $TOKENMILL_GPU_MEMORY_UTILIZATION or 0.9
    gpu_memory_utilization: float = field(default_factory=lambda: _utilization_default())
    enable_prefix_caching: bool = True
    # None: the platform's suggestion (Platform.scheduler_defaults), else 2048 tokens and 256 sequences
    max_num_batched_tokens: int | None = None  # token budget of one step
    max_num_seqs: int | None = None
    # schedule step n+1 while step n runs on the device (engine/inflight.py); None: the platform's
    # choice (Platform.async_scheduling: on for CUDA, off elsewhere)
    async_scheduling: bool | None = None
    max_model_len: int | None = None  # None: the model's own context length
    seed: int = 0
    enforce_eager: bool = False
    num_threads: int | None = None  # CPU compute threads; None: torch's default
    tensor_parallel_size: int = 1  # devices (ranks) one model is split over; >1 starts one worker per extra rank
    distributed_executor_backend: str | None = None  # "mp" (one host, the default) or "ray" (one host or many)
    trust_remote_code: bool = False  # accepted for vLLM compatibility; tokenmill never runs a model's code

    def __post_init__(self) -> None:
        self.dtype = DTYPE_ALIASES.get(self.dtype, self.dtype)
        if self.dtype not in DTYPES:
            raise TokenmillError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)} "
                                 f"(or the aliases {', '.join(DTYPE_ALIASES)})")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise TokenmillError(f"--kv-cache-dtype {self.kv_cache_dtype!r} is not one of {', '.join(KV_CACHE_DTYPES)}")
        check_quantization(self.quantization)
        if isinstance(self.kv_cache_memory, str):
            self.kv_cache_memory = parse_bytes(self.kv_cache_memory, "--kv-cache-memory")
        for name in ("block_size", "max_num_batched_tokens", "max_num_seqs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise TokenmillError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.block_size & (self.block_size - 1):
            raise TokenmillError(f"--block-size must be a power of two, got {self.block_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise TokenmillError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise TokenmillError(f"--max-model-len must be positive, got {self.max_model_len}")
        self._check_vllm_only()

    def _check_vllm_only(self) -> None:
        """vLLM options tokenmill accepts only in their default form, each refused with the reason."""
        if self.tensor_parallel_size < 1:
            raise TokenmillError(f"--tensor-parallel-size must be a positive integer, got {self.tensor_parallel_size}")
        if self.distributed_executor_backend not in (None,) + EXECUTOR_BACKENDS:
            raise TokenmillError(f"--distributed-executor-backend {self.distributed_executor_backend!r} is not one "
                                 f"of {', '.join(EXECUTOR_BACKENDS)}")
        if self.trust_remote_code:
            log.info("--trust-remote-code has no effect: tokenmill builds every architecture it supports "
                     "itself and never runs code that ships with a model")

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        """Add the engine's flags to a CLI parser (the model itself is left to the caller)."""
        _add_model_source_args(parser)
        _add_memory_args(parser)
        _add_scheduler_args(parser)

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "EngineArgs":
        """Build from a parsed namespace, taking every field the namespace has (None: the field's default)."""
        given = {f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)}
        if given.get("gpu_memory_utilization") is None:
            given.pop("gpu_memory_utilization", None)
        return cls(**given)


def _add_model_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", default=None,
                        help="directory, .gguf file or Hub id to take the tokenizer from (default: the model's)")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit for a Hub model id (default: main)")
    parser.add_argument("--chat-template", default=None,
                        help="a Jinja chat template, inline or as a file path, for a model that ships none or "
                             "to replace its own (default: the model's)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES + tuple(DTYPE_ALIASES),
                        help="weights and activations; auto takes the platform's preferred dtype, "
                             "half = float16, float = float32")
    parser.add_argument("-q", "--quantization", default="auto", choices=QUANTIZATIONS,
                        help="auto: run a GGUF's 4-/8-bit layers packed where the platform has kernels; "
                             "none: dense in --dtype; int4/int8: pack every linear layer")
    parser.add_argument("--device", default=None,
                        help="plugin to run on, e.g. cpu or cuda (default: $TOKENMILL_DEVICE or the best available)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="accepted for vLLM compatibility; it has no effect (no model code is ever run)")
    parser.add_argument("-tp", "--tensor-parallel-size", type=int, default=1,
                        help="split the model over N devices (ranks), one process each (default: 1)")
    parser.add_argument("--distributed-executor-backend", default=None, choices=EXECUTOR_BACKENDS,
                        help="how ranks 1..N-1 run: mp (spawned processes on this host, the default) or ray "
                             "(Ray actors on the cluster at $RAY_ADDRESS, or a local one; pip install 'tokenmill[ray]')")


def _add_memory_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--block-size", type=int, default=16, help="tokens per KV-cache block (a power of two)")
    parser.add_argument("--kv-cache-memory", "--kv-cache-memory-bytes", dest="kv_cache_memory",
                        type=_parse_bytes_arg, default=None,
                        help="KV pool size, e.g. 2GiB or 500MB (default: the plugin's choice; CPU: min(4 GiB, "
                             "25%% of free RAM), GPU: what --gpu-memory-utilization leaves)")
    parser.add_argument("--kv-cache-dtype", default="auto", choices=KV_CACHE_DTYPES,
                        help="dtype of the KV cache (default: auto, the model's dtype; under --dtype auto "
                             "the plugin may pick a narrower one: the CPU's float16 for float32 models on "
                             "AVX-512 BF16; bfloat16 and float16 halve the cache's memory and attention's traffic)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="share of an accelerator's memory for weights, activations and the KV cache "
                             f"(default: ${ENV_GPU_MEMORY_UTILIZATION} or 0.9)")
    parser.add_argument("--no-prefix-caching", "--no-enable-prefix-caching", dest="enable_prefix_caching",
                        action="store_false", help="switch off reuse of cached KV blocks for shared prompt prefixes")
    parser.add_argument("--enable-prefix-caching", dest="enable_prefix_caching", action="store_true",
                        default=True, help=argparse.SUPPRESS)  # vLLM's spelling of the default


def _add_scheduler_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-num-batched-tokens", type=int, default=None,
                        help="token budget of one engine step (default: the platform's; 8192 on GPUs of 70 GiB "
                             "or more, else 2048)")
    parser.add_argument("--max-num-seqs", type=int, default=None,
                        help="most sequences running at once (default: the platform's; 512 on GPUs of 70 GiB "
                             "or more, else 256)")
    parser.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                        help="schedule and prepare step n+1 while step n runs on the device, reading tokens "
                             "back without stalling the next launch (default: the platform's; on for CUDA)")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="context length, prompt plus output (default: the model's own)")
    parser.add_argument("--seed", type=int, default=0, help="engine random seed")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="never capture graphs or compile the model step (CUDA graphs, HPU graphs, XLA)")
    parser.add_argument("--num-threads", type=int, default=None, help="CPU compute threads (default: torch's)")


def _utilization_default() -> float:
    raw = os.environ.get(ENV_GPU_MEMORY_UTILIZATION)
    try:
        return float(raw) if raw else 0.9
    except ValueError:
        raise TokenmillError(f"${ENV_GPU_MEMORY_UTILIZATION}={raw!r} is not a number; set it to a share "
                             "in (0, 1], e.g. 0.8") from None


def check_quantization(quantization: str) -> None:
    """Refuse an unknown --quantization value, listing the known ones."""
    if quantization not in QUANTIZATIONS:
        raise TokenmillError(f"--quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")


def parse_bytes(text: str, option: str = "a size") -> int:
    """Bytes from "2GiB", "500MB", "1.5 GB" or a plain integer; anything else names the accepted units."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if match is None or (unit and unit not in BYTE_UNITS):
        raise TokenmillError(f"{option} {text!r} is not a size; give a whole number of bytes or a number "
                             f"with a unit: {BYTE_UNITS_TEXT}, e.g. 2GiB or 500MB")
    value = int(float(match.group(1)) * BYTE_UNITS[unit or "b"])
    if value < 1:
        raise TokenmillError(f"{option} {text!r} is zero; give a positive size, e.g. 2GiB")
    return value


def _parse_bytes_arg(text: str) -> int:
    """parse_bytes for argparse: its message becomes `argument --kv-cache-memory: <message>`."""
    try:
        return parse_bytes(text, "size")
    except TokenmillError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
