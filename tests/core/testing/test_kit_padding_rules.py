"""The kit's padding-rule checker: it accepts what the core's padding builds, and catches each broken rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenmill.interfaces import ShapeBuckets
from tokenmill.sched.output import ScheduledRequest, SchedulerOutput
from tokenmill.sched.request import Request
from tokenmill.testing.padding_rules import batch_violations
from tokenmill.worker.padding import StepPadding
from tokenmill.worker.step_inputs import build_step_inputs

S = 4
NULL = 99
BUCKETS = ShapeBuckets(token_counts=(8, 32, 64), batch_sizes=(2, 4, 8), block_table_widths=(2, 8, 16))


def _step(specs: list[tuple[int, int]]) -> SchedulerOutput:
    """specs: (tokens already cached, new tokens) per request; each request owns distinct blocks."""
    scheduled, next_block = [], 0
    for i, (cached, new) in enumerate(specs):
        total = cached + new
        blocks = list(range(next_block, next_block + -(-total // S)))
        next_block += len(blocks)
        request = Request(f"r{i}", list(range(1, total + 2)), max_tokens=8)
        scheduled.append(ScheduledRequest(request, start=cached, num_new_tokens=new, block_ids=blocks, samples=True))
    return SchedulerOutput(scheduled=scheduled, num_batched_tokens=sum(n for _, n in specs), preempted_ids=[])


def _inputs(specs, padded: bool = True):
    padding = StepPadding(BUCKETS, S, NULL) if padded else None
    return build_step_inputs(_step(specs), S, torch.device("cpu"), padding)


def _violations(inputs, buckets=BUCKETS) -> list[str]:
    return batch_violations(inputs.batch, inputs.input_ids, inputs.positions, S, buckets)


REQUESTS = st.lists(st.tuples(st.integers(0, 20), st.integers(1, 12)), min_size=1, max_size=5)
DECODES = st.lists(st.tuples(st.integers(0, 40), st.just(1)), min_size=1, max_size=7)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(specs=st.one_of(REQUESTS, DECODES))
def test_the_cores_padding_obeys_the_rules(specs):
    """Two implementations of interfaces.AttentionBatch's rules agree on every step shape."""
    assert _violations(_inputs(specs)) == []


@settings(max_examples=30, deadline=None, derandomize=True)
@given(specs=REQUESTS)
def test_unpadded_steps_pass_as_eager(specs):
    assert _violations(_inputs(specs, padded=False), buckets=None) == []


PREFILL = [(0, 5), (4, 6)]  # 11 tokens, 2 requests -> T 32, B 4 (a padding request holds 21 tokens)
DECODE = [(4, 1), (9, 1), (2, 1)]  # B 3 -> 4, one one-token padding request


def _broken(specs, change) -> list[str]:
    inputs = _inputs(specs)
    change(inputs)
    return _violations(inputs)


def _set_table(inputs, row: int, col: int, block: int) -> None:
    inputs.batch.block_tables[row, col] = block


def test_a_padding_request_pointing_at_a_real_block_is_caught():
    assert any("padding request's block-table row" in p for p in _broken(PREFILL, lambda i: _set_table(i, 3, 0, 1)))


def test_a_real_row_with_real_blocks_after_the_null_block_is_caught():
    def change(inputs):
        inputs.batch.block_tables[0, 1] = NULL  # request 0 owns 2 blocks: its second becomes null
    found = _broken(PREFILL, change)
    assert found, "a null block inside a request's own blocks must be caught"


def test_a_padding_token_outside_the_null_block_is_caught():
    def change(inputs):
        inputs.batch.slot_mapping[-1] = 3  # block 0, a real request's
    assert any("null block" in p for p in _broken(PREFILL, change))


def test_a_padding_token_with_an_id_is_caught():
    def change(inputs):
        inputs.input_ids[-1] = 7
    assert any("id 0 and position 0" in p for p in _broken(DECODE, change))


def test_a_step_not_at_its_bucket_is_caught():
    """A decode step of 3 requests at B 4, checked against buckets whose smallest fit is 8."""
    inputs = _inputs(DECODE)
    other = dataclasses.replace(BUCKETS, batch_sizes=(2, 8))
    assert any("B = T" in p for p in batch_violations(inputs.batch, inputs.input_ids, inputs.positions, S, other))


def test_an_eager_step_with_padding_is_caught():
    assert any("eager platform" in p for p in _violations(_inputs(PREFILL), buckets=None))


def test_slots_that_do_not_follow_the_block_table_are_caught():
    def change(inputs):
        inputs.batch.slot_mapping[0] += 1
    assert any("do not follow its block table" in p for p in _broken(PREFILL, change))


@pytest.mark.parametrize("field", ["query_lens_cpu", "seq_lens_cpu"])
def test_host_lists_that_disagree_with_the_tensors_are_caught(field):
    def change(inputs):
        getattr(inputs.batch, field)[0] += 1
    assert _broken(PREFILL, change)
