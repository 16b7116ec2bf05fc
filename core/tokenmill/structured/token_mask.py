"""The per-step token mask of a batch's constrained rows, and the reference of the "apply_token_bitmask" op."""

from __future__ import annotations

import torch

_BITS = 32  # xgrammar packs 32 tokens into each int32 word of the bitmask


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> None:
    """The op's reference, in place: logits float32 [P, V]; bitmask int32 [R, W] (W * 32 >= V, bit t of
    word w set = token 32 * w + t allowed), on logits' device; rows int64 [R], the logits rows it masks.

    A plugin may override it with a fused kernel; the result must mask exactly these entries.
    """
    vocab = logits.shape[1]
    shifts = torch.arange(_BITS, dtype=torch.int32, device=bitmask.device)  # [32]
    allowed = ((bitmask.unsqueeze(-1) >> shifts) & 1).bool().flatten(1)[:, :vocab]  # [R, V]
    masked = logits.index_select(0, rows).masked_fill_(~allowed, float("-inf"))  # [R, V]
    logits.index_copy_(0, rows, masked)


class BatchMask:
    """Builds the bitmask of a step's constrained rows on the host (xgrammar fills it), then hands it
    to the op on the logits' device. The host buffer is kept and grown, never rebuilt per step."""

    def __init__(self) -> None:
        self._host = torch.empty(0, 0, dtype=torch.int32)  # [rows capacity, W]

    def apply(self, logits: torch.Tensor, rows: list, ops) -> None:
        """Mask logits float32 [P, V] in place for every row with a grammar; rows without one are untouched."""
        constrained = [i for i, row in enumerate(rows) if row.grammar is not None]
        if not constrained:
            return
        words = -(-logits.shape[1] // _BITS)
        host = self._buffer(len(constrained), words)  # [R, W]
        for slot, i in enumerate(constrained):
            state = rows[i].grammar
            if state.terminated or state.broken:
                host[slot].fill_(-1)  # all allowed: the engine stops this sequence after this token
            else:
                state.fill(host, slot)
        device = logits.device
        bitmask = host if device.type == "cpu" else host.to(device, non_blocking=True)  # [R, W]
        index = torch.tensor(constrained, dtype=torch.int64, device=device)  # [R]
        ops.apply_token_bitmask(logits, bitmask, index)

    def _buffer(self, num_rows: int, words: int) -> torch.Tensor:
        if self._host.shape[0] < num_rows or self._host.shape[1] != words:
            self._host = torch.empty(max(num_rows, 2 * self._host.shape[0]), words, dtype=torch.int32)
        return self._host[:num_rows]
