"""Per-row sampling parameters as tensors, built once and reused while a batch keeps the same rows."""

from __future__ import annotations

from typing import Any

import torch


class RowTensors:
    """A tensor of one SamplingParams field per row, e.g. the temperatures of a batch, cached.

    In steady decoding the same rows come back step after step, so the tensor (and, on an
    accelerator, its host-to-device copy) is built only when the rows change. A row's params must
    not change after the row is built (SamplingRow says so). Entries hold the rows themselves, so
    identity comparison is safe: no other object can take a cached row's id while it is held.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[Any, ...], tuple[list, torch.Tensor]] = {}  # key -> (rows, tensor)

    def get(self, rows: list, field: str, dtype: torch.dtype, device: torch.device, group: str = "") -> torch.Tensor:
        """[R] tensor of `row.params.<field>` for each row, on `device`; read-only.

        `group` names the caller's subset of the batch, so two subsets asking for the same field
        each keep their own entry instead of evicting each other every step."""
        key = (group, field, dtype, device)
        entry = self._entries.get(key)
        if entry is not None and _same_rows(entry[0], rows):
            return entry[1]
        tensor = torch.tensor([getattr(r.params, field) for r in rows], dtype=dtype, device=device)  # [R]
        self._entries[key] = (list(rows), tensor)
        return tensor


def _same_rows(cached: list, rows: list) -> bool:
    return len(cached) == len(rows) and all(a is b for a, b in zip(cached, rows))
