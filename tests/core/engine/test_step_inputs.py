"""build_step_inputs: flat tensors of a mixed step and of a pure-decode step, against plain lists."""

from itertools import accumulate

import torch

from tokenmill.sched.output import ScheduledRequest, SchedulerOutput
from tokenmill.sched.request import Request
from tokenmill.worker.step_inputs import build_step_inputs

BLOCK = 4


def _scheduled(request_id, num_tokens, start, num_new, first_block):
    request = Request(request_id, list(range(100, 100 + num_tokens)), 8)
    blocks = list(range(first_block, first_block + -(-(start + num_new) // BLOCK)))
    return ScheduledRequest(request, num_new, start, blocks, start + num_new == num_tokens)


def _expected(scheduled):
    tokens, positions, slots, rows, tables = [], [], [], [], []
    for s in scheduled:
        for p in range(s.start, s.start + s.num_new_tokens):
            tokens.append(s.request.all_token_ids[p])
            positions.append(p)
            slots.append(s.block_ids[p // BLOCK] * BLOCK + p % BLOCK)
        if s.samples:
            rows.append(len(tokens) - 1)
        tables.append(s.block_ids)
    width = max(len(t) for t in tables)
    return tokens, positions, slots, rows, [t + [0] * (width - len(t)) for t in tables]


def _check(scheduled):
    out = SchedulerOutput(scheduled, sum(s.num_new_tokens for s in scheduled), [])
    inputs = build_step_inputs(out, BLOCK, torch.device("cpu"))
    tokens, positions, slots, rows, tables = _expected(scheduled)
    batch = inputs.batch
    assert inputs.input_ids.tolist() == tokens and inputs.input_ids.dtype == torch.int64
    assert inputs.positions.tolist() == positions
    assert batch.slot_mapping.tolist() == slots and batch.slot_mapping.dtype == torch.int64
    assert inputs.sample_rows.tolist() == rows
    assert batch.block_tables.tolist() == tables and batch.block_tables.dtype == torch.int32
    lens = [s.num_new_tokens for s in scheduled]
    assert batch.query_lens_cpu == lens and batch.query_start_loc.tolist() == [0, *accumulate(lens)]
    assert batch.seq_lens.tolist() == batch.seq_lens_cpu == [s.start + s.num_new_tokens for s in scheduled]
    assert inputs.sample_ids == [s.request.request_id for s in scheduled if s.samples]
    assert list(inputs.query_ranges.values()) == [(a, b) for a, b in zip([0, *accumulate(lens)], accumulate(lens))]


def test_mixed_step_with_a_prefill_chunk():
    _check([_scheduled("a", 9, 8, 1, 0), _scheduled("b", 20, 4, 7, 10), _scheduled("c", 5, 0, 5, 30)])


def test_pure_decode_step():
    _check([_scheduled(str(i), 5 + 3 * i, 4 + 3 * i, 1, 10 * i) for i in range(6)])
