"""The per-step token mask of a batch's constrained rows, and the reference of the "apply_token_bitmask" op."""

from __future__ import annotations

import torch

_BITS = 32  # xgrammar packs 32 tokens into each int32 word of the bitmask


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> None:
    """The op's reference, in place: logits float32 [P, V]; bitmask int32 [P, W] (W * 32 >= V; bit t of
    word w set = token 32 * w + t allowed) on logits' device; rows int64 [R]: only these rows are masked,
    each by its own bitmask row (the others' bitmask rows are not read).

    On the CPU it runs xgrammar's C++ kernel; elsewhere plain torch. A plugin may override it with
    its own kernel; the result must mask exactly these entries.
    """
    if logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.is_contiguous():
        import xgrammar

        xgrammar.apply_token_bitmask_inplace(logits, bitmask, indices=rows.tolist(), backend="cpu")
        return
    vocab = logits.shape[1]
    words = bitmask.index_select(0, rows).contiguous()  # [R, W]
    table = _bit_table(bitmask.device)  # [256, 8]
    allowed = table[words.view(torch.uint8).long()].flatten(1)[:, :vocab]  # [R, W * 4, 8] -> [R, V]
    sub = logits.index_select(0, rows)  # [R, V]
    logits.index_copy_(0, rows, sub.masked_fill_(~allowed, float("-inf")))


_TABLES: dict[torch.device, torch.Tensor] = {}


def _bit_table(device: torch.device) -> torch.Tensor:
    """bool [256, 8]: the bits of every byte, lowest first (little-endian words, as xgrammar packs them)."""
    table = _TABLES.get(device)
    if table is None:
        byte = torch.arange(256, dtype=torch.int32, device=device).unsqueeze(1)  # [256, 1]
        table = _TABLES[device] = ((byte >> torch.arange(8, dtype=torch.int32, device=device)) & 1).bool()
    return table


class BatchMask:
    """Builds the bitmask of a step's constrained rows on the host (xgrammar fills it), then hands it
    to the op on the logits' device. The host buffer is kept and grown, never rebuilt per step."""

    def __init__(self) -> None:
        self._host = torch.empty(0, 0, dtype=torch.int32)  # [rows capacity, W]

    def apply(self, logits: torch.Tensor, rows: list, ops) -> None:
        """Mask logits float32 [P, V] in place for every row with a grammar; rows without one are untouched."""
        constrained = [i for i, row in enumerate(rows) if getattr(row, "grammar", None) is not None]
        if not constrained:
            return
        words = -(-logits.shape[1] // _BITS)
        host = self._buffer(constrained[-1] + 1, words)  # [B', W]; rows without a grammar are not read
        for i in constrained:
            state = rows[i].grammar
            if state.terminated or state.broken:
                host[i].fill_(-1)  # all allowed: the engine stops this sequence after this token
            else:
                state.fill(host, i)
        device = logits.device
        bitmask = host if device.type == "cpu" else host.to(device, non_blocking=True)  # [B', W]
        index = torch.tensor(constrained, dtype=torch.int64, device=device)  # [R]
        ops.apply_token_bitmask(logits, bitmask, index)

    def _buffer(self, num_rows: int, words: int) -> torch.Tensor:
        if self._host.shape[0] < num_rows or self._host.shape[1] != words:
            self._host = torch.empty(max(num_rows, 2 * self._host.shape[0]), words, dtype=torch.int32)
        return self._host[:num_rows]
