"""Builds one step's flat tensors (token ids, positions, slots, block tables) from a SchedulerOutput."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from itertools import accumulate, chain

import torch

from tokenmill.interfaces import AttentionBatch
from tokenmill.sched.output import ScheduledRequest, SchedulerOutput
from tokenmill.worker.padding import StepPadding


_TYPECODES = {torch.int64: "q", torch.int32: "i"}  # array typecodes of the packed dtypes
_NO_ROWS = torch.empty(0, dtype=torch.int64)  # StepInputs.pending_rows / pending_src of a step with none


@dataclass(slots=True)
class StepInputs:
    """Everything the model needs for one step, plus where to read the logits to sample."""

    input_ids: torch.Tensor  # int64 [T]
    positions: torch.Tensor  # int64 [T]
    batch: AttentionBatch
    sample_rows: torch.Tensor  # int64 [B_s] (padded: [B], row 0 past the real ones): rows of T to sample
    sample_ids: list[str]  # request ids in sample_rows order
    query_ranges: dict[str, tuple[int, int]]  # request id -> [begin, end) rows of T this step
    all_rows_sample: bool  # every row of T is a sampled row, in order (unpadded decode)
    # rows of T whose token is pending (async scheduling), and where each is in the previous
    # step's sampled-token tensor: the runner fills input_ids[pending_rows] on the device
    pending_rows: torch.Tensor  # int64 [N_p]
    pending_src: torch.Tensor  # int64 [N_p]


@dataclass(slots=True)
class _Lists:
    """The step's host-side lists, filled request by request."""

    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    query_lens: list[int] = field(default_factory=list)
    seq_lens: list[int] = field(default_factory=list)
    tables: list[list[int]] = field(default_factory=list)
    sample_rows: list[int] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    pending_rows: list[int] = field(default_factory=list)
    pending_src: list[int] = field(default_factory=list)

    def add(self, s: ScheduledRequest, block_size: int, pending: dict[str, int]) -> None:
        begin, end = s.start, s.start + s.num_new_tokens
        row0, blocks = len(self.tokens), s.block_ids
        known = s.request.all_token_ids[begin:end]
        self.tokens.extend(known)
        if len(known) < end - begin:  # the range ends at the request's pending token
            self._add_pending(s.request.request_id, pending)
        self.positions.extend(range(begin, end))
        self.slots.extend(blocks[p // block_size] * block_size + p % block_size for p in range(begin, end))
        self.query_lens.append(end - begin)
        self.seq_lens.append(end)
        self.tables.append(blocks)
        self.ranges[s.request.request_id] = (row0, len(self.tokens))
        if s.samples:
            self.sample_rows.append(len(self.tokens) - 1)
            self.sample_ids.append(s.request.request_id)

    def _add_pending(self, request_id: str, pending: dict[str, int]) -> None:
        """A placeholder row for a token still on the device; the runner fills it from `pending`'s row."""
        source = pending.get(request_id)
        if source is None:
            raise ValueError(f"request {request_id!r} is scheduled over a pending token, but the previous "
                             f"step sampled no token for it")
        self.pending_rows.append(len(self.tokens))
        self.pending_src.append(source)
        self.tokens.append(0)

    @classmethod
    def of_decodes(cls, scheduled: list[ScheduledRequest], block_size: int, pending: dict[str, int]) -> _Lists:
        """The same lists when every request computes exactly one token (and samples it)."""
        positions = [s.start for s in scheduled]
        ids = [s.request.request_id for s in scheduled]
        lists = cls(
            positions=positions,
            slots=[s.block_ids[p // block_size] * block_size + p % block_size for s, p in zip(scheduled, positions)],
            query_lens=[1] * len(scheduled),
            seq_lens=[p + 1 for p in positions],
            tables=[s.block_ids for s in scheduled],
            sample_rows=list(range(len(scheduled))),
            sample_ids=ids,
            ranges={request_id: (row, row + 1) for row, request_id in enumerate(ids)},
        )
        for s in scheduled:
            known = s.request.all_token_ids
            if s.start < len(known):
                lists.tokens.append(known[s.start])
            else:
                lists._add_pending(s.request.request_id, pending)
        return lists


def build_step_inputs(out: SchedulerOutput, block_size: int, device: torch.device,
                      padding: StepPadding | None = None, pending: dict[str, int] | None = None) -> StepInputs:
    """Flatten the scheduled requests end to end; the only place sequences become tensors.

    `pending` maps each request whose last token is still on the device (async scheduling) to
    that token's row in the previous step's sampled-token tensor; its input row is left for the
    runner to fill there (StepInputs.pending_rows / pending_src).

    With `padding` (static-shape platforms) the lists are padded to the buckets first, and the
    sampled rows are padded to the padded batch size. The int64 arrays travel as one tensor and
    the int32 ones as another (slices of them are the fields), so a step costs two host tensors
    and at most two host-to-device copies.
    """
    decode = out.num_batched_tokens == len(out.scheduled) and all(s.samples for s in out.scheduled)
    pending = pending or {}
    if decode:
        lists = _Lists.of_decodes(out.scheduled, block_size, pending)  # the steady state: pure decode
    else:
        lists = _Lists()
        for s in out.scheduled:
            lists.add(s, block_size, pending)
    pad_tokens = pad_reqs = 0
    if padding is not None:
        pad_tokens, pad_reqs = padding.pad(lists)
        have, want = len(lists.sample_rows), len(lists.query_lens)
        # padded decode: padding request i's row is row i; otherwise padding rows read row 0
        lists.sample_rows.extend(range(have, want) if decode else [0] * (want - have))
    int64_lists = [lists.tokens, lists.positions, lists.slots, lists.sample_rows]
    if lists.pending_rows:  # async scheduling only: otherwise no device tensor (a lazy device traces none)
        int64_lists += [lists.pending_rows, lists.pending_src]
    tokens, positions, slots, sample_rows, *pending = _packed(int64_lists, torch.int64, device)
    pending_rows, pending_src = pending or (_NO_ROWS, _NO_ROWS)
    batch = _attention_batch(lists, slots, device)
    batch.num_padded_tokens, batch.num_padded_reqs = pad_tokens, pad_reqs
    batch.null_block = padding.null_block if padding is not None else 0
    return StepInputs(
        input_ids=tokens,
        positions=positions,
        batch=batch,
        sample_rows=sample_rows,
        sample_ids=lists.sample_ids,
        query_ranges=lists.ranges,
        all_rows_sample=decode,
        pending_rows=pending_rows,
        pending_src=pending_src,
    )


def _attention_batch(lists: _Lists, slots: torch.Tensor, device: torch.device) -> AttentionBatch:
    tables, num_reqs = lists.tables, len(lists.tables)
    width = max(map(len, tables))
    padded = list(chain.from_iterable(t if len(t) == width else t + [0] * (width - len(t)) for t in tables))
    starts, seq_lens, flat_tables = _packed([[0, *accumulate(lists.query_lens)], lists.seq_lens, padded],
                                            torch.int32, device)
    return AttentionBatch(
        query_start_loc=starts,
        seq_lens=seq_lens,
        block_tables=flat_tables.view(num_reqs, width),
        slot_mapping=slots,
        query_lens_cpu=lists.query_lens,
        seq_lens_cpu=lists.seq_lens,
        max_query_len=max(lists.query_lens),
        max_seq_len=max(lists.seq_lens),
    )


def _packed(parts: list[list[int]], dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """One tensor holding the lists end to end, returned as one 1-D view per list."""
    # Built on the host then copied once; non_blocking lets an accelerator overlap the copy.
    # array -> frombuffer is about 3x faster than torch.tensor(list); the tensor keeps the array alive.
    buffer = array(_TYPECODES[dtype])
    for part in parts:
        buffer.fromlist(part)
    host = torch.frombuffer(buffer, dtype=dtype)  # [sum of lengths]
    whole = host.to(device, non_blocking=True)  # the host tensor itself when device is the host
    views, offset = [], 0
    for part in parts:
        views.append(whole[offset: offset + len(part)])
        offset += len(part)
    return views
