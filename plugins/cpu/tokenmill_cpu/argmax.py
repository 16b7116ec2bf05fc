"""Row-wise argmax of a logits batch, blocked because torch's CPU argmax kernel is slow: the cpu "argmax" op."""

from __future__ import annotations

import torch

_BLOCK = 1024  # columns per block of the CPU path: block maxima are cheap, one block is re-read
_OFFSETS = torch.arange(_BLOCK)  # int64 [_BLOCK], column offsets inside a block (read-only)


def argmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """float [B, V] -> int64 [B], the first index of each row's maximum (as torch.argmax).

    torch's CPU argmax is not vectorized and runs about 10x slower than amax (6 ms against 0.6 ms
    for [64, 49152] on one core), so, for two rows or more: the maximum of each block of
    _BLOCK columns (amax), the first block holding the row's maximum (argmax of [B, V/_BLOCK]),
    then argmax inside that block alone. Ties and NaN resolve as torch.argmax does. Single
    rows (where the extra ops cost about what they save) and small vocabularies keep the
    one-kernel argmax. The CPU plugin registers it as its "argmax" op override.
    """
    rows, vocab = logits.shape
    if rows < 2 or vocab < 4 * _BLOCK:
        return logits.argmax(dim=-1)
    full = vocab - vocab % _BLOCK
    block_max = logits[:, :full].reshape(rows, full // _BLOCK, _BLOCK).amax(dim=-1)  # [B, nb]
    if full < vocab:
        block_max = torch.cat([block_max, logits[:, full:].amax(dim=-1, keepdim=True)], dim=1)  # [B, nb + 1]
    block = block_max.argmax(dim=-1, keepdim=True)  # [B, 1]
    cols = (block * _BLOCK + _OFFSETS).clamp_(max=vocab - 1)  # [B, _BLOCK], increasing
    inside = logits.gather(1, cols).argmax(dim=-1, keepdim=True)  # [B, 1]
    return cols.gather(1, inside).squeeze(1)  # [B]
