"""Builds one step's flat tensors (token ids, positions, slots, block tables) from a SchedulerOutput."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenmill.interfaces import AttentionBatch
from tokenmill.sched.output import SchedulerOutput


@dataclass(slots=True)
class StepInputs:
    """Everything the model needs for one step, plus where to read the logits to sample."""

    input_ids: torch.Tensor  # int64 [T]
    positions: torch.Tensor  # int64 [T]
    batch: AttentionBatch
    sample_rows: torch.Tensor  # int64 [B_s]: row of T whose logits are sampled, one per sampling request
    sample_ids: list[str]  # request ids in sample_rows order
    query_ranges: dict[str, tuple[int, int]]  # request id -> [begin, end) rows of T this step


def build_step_inputs(out: SchedulerOutput, block_size: int, device: torch.device) -> StepInputs:
    """Flatten the scheduled requests end to end; the only place sequences become tensors."""
    tokens: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    query_lens: list[int] = []
    seq_lens: list[int] = []
    tables: list[list[int]] = []
    sample_rows: list[int] = []
    sample_ids: list[str] = []
    ranges: dict[str, tuple[int, int]] = {}
    for s in out.scheduled:
        begin, end = s.start, s.start + s.num_new_tokens
        row0 = len(tokens)
        tokens.extend(s.request.all_token_ids[begin:end])
        positions.extend(range(begin, end))
        blocks = s.block_ids
        slots.extend(blocks[p // block_size] * block_size + p % block_size for p in range(begin, end))
        query_lens.append(end - begin)
        seq_lens.append(end)
        tables.append(blocks)
        ranges[s.request.request_id] = (row0, len(tokens))
        if s.samples:
            sample_rows.append(len(tokens) - 1)
            sample_ids.append(s.request.request_id)
    return StepInputs(
        input_ids=_tensor(tokens, torch.int64, device),
        positions=_tensor(positions, torch.int64, device),
        batch=_attention_batch(query_lens, seq_lens, tables, slots, device),
        sample_rows=_tensor(sample_rows, torch.int64, device),
        sample_ids=sample_ids,
        query_ranges=ranges,
    )


def _attention_batch(
    query_lens: list[int], seq_lens: list[int], tables: list[list[int]], slots: list[int], device: torch.device
) -> AttentionBatch:
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    width = max(len(t) for t in tables)
    padded = [t + [0] * (width - len(t)) for t in tables]
    return AttentionBatch(
        query_start_loc=_tensor(starts, torch.int32, device),
        seq_lens=_tensor(seq_lens, torch.int32, device),
        block_tables=_tensor(padded, torch.int32, device),
        slot_mapping=_tensor(slots, torch.int64, device),
        query_lens_cpu=query_lens,
        seq_lens_cpu=seq_lens,
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
    )


def _tensor(data: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Built on the host then copied once; non_blocking lets an accelerator overlap the copy.
    host = torch.tensor(data, dtype=dtype)
    return host if device.type == "cpu" else host.to(device, non_blocking=True)
