"""ArchConfig: the hyper-parameters of a decoder-only model, read from a Hugging Face config dict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenmill.errors import ModelLoadError
from tokenmill.models.moe_config import MoeConfig

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")  # scaled ones: models/rotary.py
_ROPE_ALIASES = {"su": "longrope"}  # early Phi-3 configs


@dataclass(frozen=True, slots=True)
class FamilyTraits:
    """What a family fixes that its config.json does not say (Qwen2 always has a q/k/v bias)."""

    qkv_bias: bool | None = None  # None: take config's attention_bias
    o_bias: bool | None = None  # None: take config's attention_bias
    qk_norm: bool = False  # per-head RMSNorm on q and k before rotary (Qwen3)
    moe: str | None = None  # mixture-of-experts style (moe_config.MOE_STYLES); None: dense
    activations: tuple[str, ...] = ("silu",)  # the hidden_act values the family's graph implements
    sliding_pattern: int = 0  # without layer_types: every n-th layer is global, the others windowed (Gemma)


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
    hidden_act: str = "silu"
    layer_windows: tuple[int | None, ...] = ()  # per layer: its sliding window, None = global; () = none
    local_rope_theta: float | None = None  # the windowed layers' own rope base (Gemma 3)
    query_pre_attn_scalar: float | None = None  # softmax scale is its -1/2 power (Gemma); None: D ** -0.5
    attn_logit_softcap: float | None = None  # scores -> cap * tanh(scores / cap) (Gemma 2)
    final_logit_softcap: float | None = None  # logits -> cap * tanh(logits / cap) (Gemma 2)

    def window_of(self, layer: int) -> int | None:
        """Layer `layer`'s sliding window (keys j with i - window < j <= i), or None for full attention."""
        return self.layer_windows[layer] if self.layer_windows else None

    @property
    def all_layers_windowed(self) -> bool:
        """Every layer attends through a window (Mistral-style): blocks behind them all can be freed."""
        return bool(self.layer_windows) and all(w is not None for w in self.layer_windows)

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
        _check_compatible(cfg, heads, kv_heads, source, traits)
        bias = bool(cfg.get("attention_bias", False))
        theta, scaling = _rope(cfg, source)
        windows = _layer_windows(cfg, need.int("num_hidden_layers"), traits, source)
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
            sliding_window=max((w for w in windows if w), default=None),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=_as_ids(cfg.get("eos_token_id")),
            rope_freq_factors=tuple(cfg["rope_freq_factors"]) if cfg.get("rope_freq_factors") else None,
            moe=None if traits.moe is None else MoeConfig.from_hf_config(cfg, traits.moe, need.int("num_hidden_layers"), source),
            hidden_act=_activation(cfg),
            layer_windows=windows,
            local_rope_theta=_local_rope_theta(cfg),
            query_pre_attn_scalar=_opt_float(cfg.get("query_pre_attn_scalar")),
            attn_logit_softcap=_opt_float(cfg.get("attn_logit_softcapping")),
            final_logit_softcap=_opt_float(cfg.get("final_logit_softcapping")),
        )


def _check_compatible(cfg: dict[str, Any], heads: int, kv_heads: int, source: str,
                      traits: FamilyTraits = FamilyTraits()) -> None:
    if heads % kv_heads:
        raise ModelLoadError(
            f"{source}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}"
        )
    act = _activation(cfg)
    if act not in traits.activations:
        raise ModelLoadError(f"{source}: hidden_act={act!r} is not supported; this model family needs "
                             f"{' or '.join(repr(a) for a in traits.activations)}")


def _activation(cfg: dict[str, Any]) -> str:
    return str(cfg.get("hidden_activation") or cfg.get("hidden_act") or "silu")  # Gemma names it hidden_activation


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


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
    if "full_attention" in params:  # transformers 5 nests per layer type (Gemma 3): global layers' rope
        params = dict(params["full_attention"])
    params.update({k: v for k, v in (cfg.get("rope_scaling") or {}).items() if k not in params})
    theta = float(params.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = params.pop("rope_type", None) or params.pop("type", None) or "default"
    rope_type = _ROPE_ALIASES.get(rope_type, rope_type)
    if rope_type not in ROPE_TYPES:
        raise ModelLoadError(
            f"{source}: rope scaling type {rope_type!r} is not supported (supported: {', '.join(ROPE_TYPES)})"
        )
    partial = float(params.get("partial_rotary_factor", cfg.get("partial_rotary_factor")) or 1.0)
    if partial != 1.0:
        raise ModelLoadError(f"{source}: partial_rotary_factor={partial} (rope on part of each head) is not "
                             "supported yet; only models that rotate whole heads run")
    if rope_type == "default":
        return theta, None
    if "original_max_position_embeddings" in cfg:  # Phi-3 keeps it beside rope_scaling, and it wins there
        params["original_max_position_embeddings"] = cfg["original_max_position_embeddings"]
    params["rope_type"] = rope_type
    return theta, params


def _local_rope_theta(cfg: dict[str, Any]) -> float | None:
    """Gemma 3's windowed layers' rope base: rope_local_base_freq, or transformers 5's nested entry."""
    nested = (cfg.get("rope_parameters") or {}).get("sliding_attention")
    if nested:
        return float(nested.get("rope_theta", 10000.0))
    local = cfg.get("rope_local_base_freq")
    return None if local is None else float(local)


def _layer_types(cfg: dict[str, Any], num_layers: int, traits: FamilyTraits) -> list[str]:
    """Each layer's "sliding_attention" or "full_attention", as transformers 5 writes layer_types."""
    if cfg.get("layer_types") is not None:
        return list(cfg["layer_types"])
    if traits.sliding_pattern:  # Gemma 2 (every 2nd global), Gemma 3 (every 6th, or the config's pattern)
        pattern = int(cfg.get("sliding_window_pattern") or cfg.get("_sliding_window_pattern") or traits.sliding_pattern)
        return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(num_layers)]
    if "use_sliding_window" in cfg:  # Qwen2/Qwen3: off by default; on, from layer max_window_layers up
        first = int(cfg.get("max_window_layers") or 0) if cfg["use_sliding_window"] else num_layers
        return ["sliding_attention" if i >= first else "full_attention" for i in range(num_layers)]
    return ["sliding_attention"] * num_layers  # Mistral, Phi-3: one window for every layer


def _layer_windows(cfg: dict[str, Any], num_layers: int, traits: FamilyTraits, source: str) -> tuple[int | None, ...]:
    window = cfg.get("sliding_window")
    if not window:
        return ()
    types = _layer_types(cfg, num_layers, traits)
    if len(types) != num_layers or not set(types) <= {"sliding_attention", "full_attention"}:
        raise ModelLoadError(f"{source}: layer_types must name 'sliding_attention' or 'full_attention' for each "
                             f"of the {num_layers} layers, found {types!r}")
    if not isinstance(window, int) or window < 1:
        raise ModelLoadError(f"{source}: sliding_window must be a positive integer, found {window!r}")
    windows = tuple(window if t == "sliding_attention" else None for t in types)
    return windows if any(windows) else ()


def _as_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
