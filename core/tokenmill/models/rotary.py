"""The rotary-embedding cos/sin cache; scaled frequencies come from transformers' rope functions.

Every scaled rope type (linear, dynamic, yarn, longrope, llama3, and any other name in
transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS) is computed by transformers itself, so the
frequencies and the attention factor are the ones the model was trained with. transformers is a
core dependency (the tokenizer needs it); the import is lazy because the plain-RoPE path needs none.
Sequence-length dependent types are evaluated once, at the engine's context length (as vLLM does):
"dynamic" at max_model_len, "longrope" with its long factors when max_model_len exceeds the
original context, else its short ones.
"""

from __future__ import annotations

from typing import Any

import torch

from tokenmill.errors import ModelLoadError
from tokenmill.models.arch_config import ArchConfig


def scaled_rope_types() -> tuple[str, ...]:
    """The rope types transformers can compute here, sorted."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    return tuple(sorted(ROPE_INIT_FUNCTIONS))


def rope_parameters(arch: ArchConfig, max_positions: int, theta: float | None = None,
                    scaling: dict[str, Any] | None = None) -> tuple[torch.Tensor, float]:
    """(inv_freq float32 [D/2], attention factor) for `theta`/`scaling` (default: the arch's global rope)."""
    theta = arch.rope_theta if theta is None else theta
    scaling = arch.rope_scaling if scaling is None else scaling
    dim = arch.head_size
    if not scaling:
        inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        if arch.rope_freq_factors is not None:  # llama.cpp stores llama3 scaling as per-pair divisors
            inv_freq = inv_freq / torch.tensor(arch.rope_freq_factors, dtype=torch.float32)
        return inv_freq, 1.0
    return _from_transformers(arch, theta, scaling, max_positions)


def _from_transformers(arch: ArchConfig, theta: float, scaling: dict[str, Any],
                       max_positions: int) -> tuple[torch.Tensor, float]:
    from transformers import PretrainedConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope_type = scaling["rope_type"]
    fn = ROPE_INIT_FUNCTIONS.get(rope_type)
    if fn is None:
        raise ModelLoadError(f"rope type {rope_type!r} is not known to the installed transformers "
                             f"(known: {', '.join(sorted(ROPE_INIT_FUNCTIONS))}); upgrade transformers")
    params = {**scaling, "rope_theta": theta}
    config = PretrainedConfig()
    fields = {"hidden_size": arch.num_heads * arch.head_size, "num_attention_heads": arch.num_heads,
              "head_dim": arch.head_size, "max_position_embeddings": arch.max_position_embeddings,
              "rope_parameters": params, "rope_theta": theta}
    if not hasattr(config, "standardize_rope_params"):  # transformers 4.x reads rope_scaling instead
        fields["rope_scaling"] = dict(scaling)
    if "original_max_position_embeddings" in scaling:
        fields["original_max_position_embeddings"] = scaling["original_max_position_embeddings"]
    for name, value in fields.items():
        setattr(config, name, value)
    try:
        inv_freq, attention_factor = fn(config, torch.device("cpu"), max_positions)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"rope scaling {scaling}: transformers could not compute it ({exc!r}); "
                             f"check the config's rope parameters") from None
    return inv_freq.float(), float(attention_factor)


def inverse_frequencies(arch: ArchConfig, max_positions: int | None = None) -> torch.Tensor:
    """float32 [D/2]: the RoPE angular speed of each rotated pair, after any scaling."""
    return rope_parameters(arch, max_positions or arch.max_position_embeddings)[0]


def cos_sin_cache(arch: ArchConfig, max_positions: int, device: torch.device, theta: float | None = None,
                  scaling: dict[str, Any] | None = None) -> torch.Tensor:
    """float32 [max_positions, D]: cos of every (position, pair) in [:, :D/2], sin in [:, D/2:].

    Both are multiplied by the rope type's attention factor (yarn's and longrope's mscale; 1 for
    the others), as transformers does. `theta`/`scaling` select another rope than the arch's
    global one (Gemma 3's local layers).
    """
    inv_freq, attention_factor = rope_parameters(arch, max_positions, theta, scaling)  # [D/2]
    positions = torch.arange(max_positions, dtype=torch.float32)  # [P]
    angles = torch.outer(positions, inv_freq)  # [P, D/2]
    return (torch.cat((angles.cos(), angles.sin()), dim=-1) * attention_factor).to(device)
