"""Op overrides that cut a decode step's per-op overhead on the CPU, where tiny ops cost ~10 us each.

A single-stream decode of a small model is dozens of small ops per layer, so their count, not
their arithmetic, is what these save: one fused torch.rms_norm instead of six ops, and rotary as
roll + multiply-add with the step's cos/sin looked up once instead of once per layer. Float32
only; other dtypes fall back to the core references, which compute in float32 themselves.
The native layer ops (layer_ops.py) replace these where they build; these are their fallback.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from tokenmill.ops import reference


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, H], weight [H] -> [T, H] through torch's fused kernel."""
    if x.dtype != torch.float32:
        return reference.rms_norm(x, weight, eps)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + residual) -> (rms_norm of the sum [T, H], the sum [T, H])."""
    summed = x + residual
    return rms_norm(summed, weight, eps), summed


class Rotary:
    """NeoX rotary whose per-position cos/sin tables are built once per step, not once per layer.

    Every layer of a step passes the same positions; the tables are rebuilt only when the
    positions' values differ from the last ones seen (one equality check instead of seven ops).
    """

    def __init__(self) -> None:
        self._positions = torch.empty(0, dtype=torch.int64)  # a copy: callers may reuse their buffer
        self._cache: torch.Tensor | None = None
        self._tables: tuple[torch.Tensor, torch.Tensor] = ()  # type: ignore[assignment]

    def __call__(self, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor,
                 cos_sin_cache: torch.Tensor, head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if query.dtype != torch.float32:
            return reference.rotary(positions, query, key, cos_sin_cache, head_size)
        cos, sin = self._lookup(positions, cos_sin_cache)
        return _rotate(query, cos, sin, head_size), _rotate(key, cos, sin, head_size)

    def _lookup(self, positions: torch.Tensor, cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos [T, 1, D], sin [T, 1, D] with the first half negated) for this step's positions."""
        if cos_sin_cache is not self._cache or not torch.equal(positions, self._positions):
            cos, sin = cos_sin_cache.index_select(0, positions).chunk(2, dim=-1)  # [T, D/2] each
            self._tables = (torch.cat((cos, cos), -1).unsqueeze(1), torch.cat((-sin, sin), -1).unsqueeze(1))
            self._positions, self._cache = positions.clone(), cos_sin_cache
        return self._tables


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_size: int) -> torch.Tensor:
    """x [T, H*D] -> x * cos + rotate_half(x) * sin, where rotate_half (x1, x2) -> (x2, x1) and the
    sign of the first half is carried by `sin`."""
    heads = x.view(x.shape[0], -1, head_size)  # [T, H, D]
    return torch.addcmul(heads * cos, heads.roll(head_size // 2, dims=-1), sin).view(x.shape)


def fast_ops() -> dict[str, Callable[..., Any]]:
    """The overrides, keyed by op name (a fresh Rotary, so engines never share its step cache)."""
    return {"rms_norm": rms_norm, "fused_add_rms_norm": fused_add_rms_norm, "rotary": Rotary()}
