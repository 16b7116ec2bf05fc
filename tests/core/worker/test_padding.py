"""The static-shape padding rules (interfaces.AttentionBatch) on real SchedulerOutputs through build_step_inputs."""

from __future__ import annotations

import pytest
import torch

from tokenmill.errors import TokenmillError
from tokenmill.interfaces import ShapeBuckets
from tokenmill.sched.output import ScheduledRequest, SchedulerOutput
from tokenmill.sched.request import Request
from tokenmill.worker.padding import StepPadding, check_covers, default_buckets
from tokenmill.worker.step_inputs import build_step_inputs

S = 4
NULL = 99
BUCKETS = ShapeBuckets(token_counts=(8, 32), batch_sizes=(2, 4, 8), block_table_widths=(2, 8))


def _scheduled(prompt_len: int, start: int, new: int, blocks: list[int], samples: bool) -> ScheduledRequest:
    request = Request(f"r{prompt_len}-{start}", list(range(1, prompt_len + 1)), max_tokens=8)
    return ScheduledRequest(request, start=start, num_new_tokens=new, block_ids=blocks, samples=samples)


def _step(*scheduled: ScheduledRequest) -> SchedulerOutput:
    return SchedulerOutput(scheduled=list(scheduled), num_batched_tokens=sum(s.num_new_tokens for s in scheduled),
                           preempted_ids=[])


def _padded(out: SchedulerOutput):
    return build_step_inputs(out, S, torch.device("cpu"), StepPadding(BUCKETS, S, NULL))


def test_pure_decode_stays_pure_decode_with_one_token_per_padding_request():
    out = _step(_scheduled(5, 4, 1, [0, 1], True), _scheduled(3, 2, 1, [2], True), _scheduled(8, 7, 1, [3, 4], True))
    inputs = _padded(out)
    batch = inputs.batch
    assert batch.query_lens_cpu == [1, 1, 1, 1] and batch.is_pure_decode
    assert (batch.num_padded_tokens, batch.num_padded_reqs, batch.null_block) == (1, 1, NULL)
    assert inputs.input_ids.tolist()[3] == 0 and inputs.positions.tolist()[3] == 0
    assert batch.seq_lens_cpu == [5, 3, 8, 1]
    assert batch.slot_mapping.tolist()[3] // S == NULL
    assert batch.block_tables.tolist() == [[0, 1], [2, NULL], [3, 4], [NULL, NULL]]
    assert inputs.all_rows_sample and inputs.sample_rows.tolist() == [0, 1, 2, 3]


def test_mixed_step_puts_padding_tokens_on_one_padding_request():
    out = _step(_scheduled(6, 0, 6, [0, 1], True), _scheduled(3, 2, 1, [2], True))  # a prefill and a decode
    inputs = _padded(out)
    batch = inputs.batch
    assert len(inputs.input_ids) == 8 and batch.query_start_loc.tolist() == [0, 6, 7, 8, 8]
    assert batch.query_lens_cpu == [6, 1, 1, 0] and batch.seq_lens_cpu == [6, 3, 1, 0]
    assert batch.block_tables.shape == (4, 2) and batch.block_tables[2:].eq(NULL).all()
    assert inputs.sample_ids == [out.scheduled[0].request.request_id, out.scheduled[1].request.request_id]
    assert inputs.sample_rows.tolist() == [5, 6, 0, 0] and not inputs.all_rows_sample


def test_full_batch_bucket_grows_to_hold_the_padding_request():
    out = _step(_scheduled(3, 0, 3, [0], True), _scheduled(2, 0, 2, [1], True))  # T 5 -> 8, B 2 -> 4
    batch = _padded(out).batch
    assert len(batch.query_lens_cpu) == 4 and batch.query_lens_cpu[2:] == [3, 0]


def test_long_tables_take_the_wider_bucket():
    out = _step(_scheduled(13, 12, 1, [0, 1, 2, 3], True))
    assert _padded(out).batch.block_tables.shape == (2, 8)


def test_eager_steps_are_not_padded():
    out = _step(_scheduled(6, 0, 6, [0, 1], True), _scheduled(3, 2, 1, [2], True))
    batch = build_step_inputs(out, S, torch.device("cpu")).batch
    assert batch.query_lens_cpu == [6, 1] and (batch.num_padded_tokens, batch.num_padded_reqs) == (0, 0)


def test_default_buckets_cover_the_limits_and_refusals_name_the_flag():
    limits = {"max_num_batched_tokens": 2048, "max_num_seqs": 256, "max_blocks_per_seq": 20}
    buckets = default_buckets(limits)
    assert buckets.token_counts[0] == 16 and buckets.token_counts[-1] == 2048
    assert buckets.batch_sizes[-1] == 512 and buckets.block_table_widths[-1] == 32
    check_covers(buckets, limits, "x")
    with pytest.raises(TokenmillError, match="--max-num-seqs"):
        check_covers(ShapeBuckets((2048,), (256,), (32,)), limits, "x")
