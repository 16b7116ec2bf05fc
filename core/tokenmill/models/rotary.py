"""The rotary-embedding cos/sin cache, with the linear and llama3 frequency scalings."""

from __future__ import annotations

import math

import torch

from tokenmill.models.arch_config import ArchConfig


def inverse_frequencies(arch: ArchConfig) -> torch.Tensor:
    """float32 [D/2]: the RoPE angular speed of each rotated pair, after any scaling."""
    dim = arch.head_size
    inv_freq = 1.0 / (arch.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if arch.rope_freq_factors is not None:  # llama.cpp stores llama3 scaling as per-pair divisors
        inv_freq = inv_freq / torch.tensor(arch.rope_freq_factors, dtype=torch.float32)
    scaling = arch.rope_scaling or {}
    if scaling.get("rope_type") == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    elif scaling.get("rope_type") == "llama3":
        inv_freq = _llama3(inv_freq, scaling)
    return inv_freq


def _llama3(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1's scaling: slow pairs are divided by `factor`, fast ones kept, the middle blended."""
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq  # [D/2]
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(is_medium, blended, scaled)


def cos_sin_cache(arch: ArchConfig, max_positions: int, device: torch.device) -> torch.Tensor:
    """float32 [max_positions, D]: cos of every (position, pair) in [:, :D/2], sin in [:, D/2:]."""
    inv_freq = inverse_frequencies(arch)  # [D/2]
    positions = torch.arange(max_positions, dtype=torch.float32)  # [P]
    angles = torch.outer(positions, inv_freq)  # [P, D/2]
    return torch.cat((angles.cos(), angles.sin()), dim=-1).to(device)
