"""ArchConfig: the hyper-parameters of a decoder-only model, read from a Hugging Face config dict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenmill.errors import ModelLoadError
from tokenmill.models.moe_config import MoeConfig

ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True, slots=True)
class FamilyTraits:
    """What a family fixes that its config.json does not say (Qwen2 always has a q/k/v bias)."""

    qkv_bias: bool | None = None  # None: take config's attention_bias
    o_bias: bool | None = None  # None: take config's attention_bias
    qk_norm: bool = False  # per-head RMSNorm on q and k before rotary (Qwen3)
    moe: str | None = None  # mixture-of-experts style (moe_config.MOE_STYLES); None: dense


@dataclass(frozen=True, slots=True)
class ArchConfig:
    """Everything the model graph needs; built once by `from_hf_config`, then read-only."""

    architecture: str  # e.g. "LlamaForCausalLM"
    vocab_size: int  # V
    hidden_size: int  # H
    intermediate_size: int  # I
    num_layers: int
    num_heads: int  # Hq
    num_kv_heads: int  # Hkv
    head_size: int  # D
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None  # {"rope_type": "linear" | "llama3", ...}; None: plain RoPE
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None  # set only when some layer attends through a window
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    rope_freq_factors: tuple[float, ...] | None = None  # GGUF rope_freqs: per-pair divisors [D/2]
    moe: MoeConfig | None = None  # the experts and routing of an MoE family; None: dense

    @property
    def q_size(self) -> int:
        """Width of the query projection, Hq * D (may differ from H, e.g. Qwen3)."""
        return self.num_heads * self.head_size

    @property
    def kv_size(self) -> int:
        """Width of each of the key and value projections, Hkv * D."""
        return self.num_kv_heads * self.head_size

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], traits: FamilyTraits, source: str = "config.json") -> "ArchConfig":
        """Read a config.json dict; a missing or contradictory field raises ModelLoadError."""
        need = _Reader(cfg, source)
        hidden, heads = need.int("hidden_size"), need.int("num_attention_heads")
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        _check_compatible(cfg, heads, kv_heads, source)
        bias = bool(cfg.get("attention_bias", False))
        theta, scaling = _rope(cfg, source)
        return cls(
            architecture=need.architecture(),
            vocab_size=need.int("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need.int("intermediate_size"),
            num_layers=need.int("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_size=int(cfg.get("head_dim") or hidden // heads),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=need.int("max_position_embeddings"),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=bias if traits.qkv_bias is None else traits.qkv_bias,
            o_bias=bias if traits.o_bias is None else traits.o_bias,
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            qk_norm=traits.qk_norm,
            sliding_window=_sliding_window(cfg),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=_as_ids(cfg.get("eos_token_id")),
            rope_freq_factors=tuple(cfg["rope_freq_factors"]) if cfg.get("rope_freq_factors") else None,
            moe=None if traits.moe is None else MoeConfig.from_hf_config(cfg, traits.moe, need.int("num_hidden_layers"), source),
        )


def _check_compatible(cfg: dict[str, Any], heads: int, kv_heads: int, source: str) -> None:
    if heads % kv_heads:
        raise ModelLoadError(
            f"{source}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}"
        )
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ModelLoadError(f"{source}: hidden_act={act!r} is not supported; this model family needs 'silu'")


class _Reader:
    """Required-field access that names the field and the file when one is missing."""

    def __init__(self, cfg: dict[str, Any], source: str) -> None:
        self.cfg, self.source = cfg, source

    def int(self, key: str) -> int:
        value = self.cfg.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelLoadError(f"{self.source}: field {key!r} must be a positive integer, found {value!r}")
        return value

    def architecture(self) -> str:
        archs = self.cfg.get("architectures")
        if not archs or not isinstance(archs, list):
            raise ModelLoadError(f"{self.source}: no 'architectures' list, so the model class is unknown")
        return str(archs[0])


def _rope(cfg: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    """(theta, scaling) from transformers 5's rope_parameters or the older rope_theta/rope_scaling."""
    params = dict(cfg.get("rope_parameters") or {})
    params.update({k: v for k, v in (cfg.get("rope_scaling") or {}).items() if k not in params})
    theta = float(params.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = params.pop("rope_type", None) or params.pop("type", None) or "default"
    if rope_type not in ROPE_TYPES:
        raise ModelLoadError(
            f"{source}: rope scaling type {rope_type!r} is not supported (supported: {', '.join(ROPE_TYPES)})"
        )
    if rope_type == "default":
        return theta, None
    params["rope_type"] = rope_type
    return theta, params


def _sliding_window(cfg: dict[str, Any]) -> int | None:
    window = cfg.get("sliding_window")
    if not window:
        return None
    layer_types = cfg.get("layer_types")
    if layer_types is not None:
        return window if "sliding_attention" in layer_types else None
    if "use_sliding_window" in cfg:  # Qwen2/Qwen3 configs carry a window that is off by default
        return window if cfg["use_sliding_window"] else None
    return window


def _as_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
