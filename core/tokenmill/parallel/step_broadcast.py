"""The driver's compact broadcast of each step to the workers: one int64 header, one int64 payload.

No Python objects travel: the header holds the sizes and flags, the payload the step's flat
arrays end to end (token ids, positions, slots, sampled rows, then the int32 ones widened:
query starts, sequence lengths, block tables). Two broadcasts a step, on the control group.

The control group waits without a short timeout (workers idle on it between steps), but the
driver's sends are bounded: gloo's root does not finish a broadcast until every receiver has
posted its receive, so a frozen worker would otherwise hang the driver for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from tokenmill.interfaces import AttentionBatch

STOP, STEP, COPY = 0, 1, 2  # header[0]: what the workers do next
_HEADER = 12  # header fields: cmd, T, B, width, sampled rows, all rows, padded T, padded B, null block,
#              max query len, max seq len, copy pairs


@dataclass(slots=True)
class StepMessage:
    """What a worker needs for one step: the model inputs and which rows' logits to compute."""

    input_ids: torch.Tensor  # int64 [T]
    positions: torch.Tensor  # int64 [T]
    batch: AttentionBatch
    logits_indices: torch.Tensor | None  # int64 [R], or None: every row


class StepSender:
    """Driver side: broadcasts from rank 0 over the world group, each send bounded by `timeout_s`.

    A send that waits longer raises RuntimeError, which the executor reports as a rank that did
    not answer in time.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout = timedelta(seconds=timeout_s)

    def send_step(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: AttentionBatch,
                  logits_indices: torch.Tensor | None) -> None:
        rows = logits_indices if logits_indices is not None else input_ids.new_empty(0)
        width = batch.block_tables.shape[1]
        head = [STEP, input_ids.numel(), batch.seq_lens.numel(), width, rows.numel(), logits_indices is None,
                batch.num_padded_tokens, batch.num_padded_reqs, batch.null_block, batch.max_query_len,
                batch.max_seq_len, 0]
        parts = [input_ids, positions, batch.slot_mapping, rows, batch.query_start_loc, batch.seq_lens,
                 batch.block_tables.reshape(-1)]
        self._send(head, torch.cat([p.cpu().to(torch.int64) for p in parts]))

    def send_copy(self, pairs: list[tuple[int, int]]) -> None:
        head = [COPY] + [0] * (_HEADER - 2) + [len(pairs)]
        self._send(head, torch.tensor(pairs, dtype=torch.int64).reshape(-1))  # [2P]: src, dst, src, ...

    def send_stop(self) -> None:
        self._send([STOP] + [0] * (_HEADER - 1), None)

    def _send(self, head: list[int], payload: torch.Tensor | None) -> None:
        self._broadcast(torch.tensor(head, dtype=torch.int64))
        if payload is not None and payload.numel():
            self._broadcast(payload)

    def _broadcast(self, tensor: torch.Tensor) -> None:
        """The world group is gloo on every platform (see rank_setup.init_rank): its work can wait bounded."""
        dist.broadcast(tensor, src=0, async_op=True).wait(timeout=self.timeout)


class StepReceiver:
    """Worker side: the matching receives; `device` is where the model's inputs must live."""

    def __init__(self, comm: Any, device: torch.device) -> None:
        self.comm = comm
        self.device = device

    def receive(self) -> tuple[int, Any]:
        """(STOP, None), (COPY, [(src, dst), ...]) or (STEP, StepMessage); blocks until the driver sends."""
        head = self.comm.broadcast(torch.empty(_HEADER, dtype=torch.int64), 0).tolist()
        cmd = head[0]
        if cmd == STOP:
            return STOP, None
        if cmd == COPY:
            flat = self._payload(2 * head[11]).tolist()
            return COPY, list(zip(flat[0::2], flat[1::2]))
        return STEP, self._step(head)

    def _payload(self, size: int) -> torch.Tensor:
        if size == 0:
            return torch.empty(0, dtype=torch.int64)
        return self.comm.broadcast(torch.empty(size, dtype=torch.int64), 0)

    def _step(self, head: list[int]) -> StepMessage:
        _, t, b, width, r, all_rows, pad_t, pad_b, null_block, max_q, max_s, _ = head
        sizes = [t, t, t, r, b + 1, b, b * width]
        parts = self._payload(sum(sizes)).to(self.device).split(sizes)
        ids, positions, slots, rows, starts, seq_lens, tables = parts
        starts32, seq32 = starts.to(torch.int32), seq_lens.to(torch.int32)
        host_starts, host_seq = starts.tolist(), seq_lens.tolist()
        batch = AttentionBatch(
            query_start_loc=starts32, seq_lens=seq32, block_tables=tables.to(torch.int32).view(b, width),
            slot_mapping=slots, query_lens_cpu=[e - s for s, e in zip(host_starts, host_starts[1:])],
            seq_lens_cpu=host_seq, max_query_len=max_q, max_seq_len=max_s,
            num_padded_tokens=pad_t, num_padded_reqs=pad_b, null_block=null_block,
        )
        return StepMessage(ids, positions, batch, None if all_rows else rows)
