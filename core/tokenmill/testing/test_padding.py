"""Conformance: the batches a backend receives in a real engine run obey interfaces.AttentionBatch's rules.

Every AttentionBatch handed to `build_metadata` during the run is checked by
padding_rules.batch_violations: exact sizes on eager platforms; on static-shape ones T, B and the
block-table width at the smallest bucket, padding requests last, padding tokens (id 0, position 0)
in the null block, real rows padded with the null block. The step shapes stay within the buckets.
"""

from __future__ import annotations

import pytest

from tokenmill.testing.padding_rules import batch_violations


def test_every_step_obeys_the_padding_rules(engine_run, tokenmill_platform):
    _, recording, engine = engine_run
    buckets = recording.buckets if tokenmill_platform.static_shapes else None
    assert (buckets is not None) == tokenmill_platform.static_shapes, "a static platform ran with no ShapeBuckets"
    found = []
    for index, (batch, call) in enumerate(zip(recording.batches, recording.steps)):
        found += [f"step {index} (query_lens {batch.query_lens_cpu}): {p}"
                  for p in batch_violations(batch, call.input_ids, call.positions, engine.args.block_size, buckets)]
    assert not found, "\n".join(found)


def test_null_block_is_reserved_in_the_pool(engine_run, tokenmill_platform):
    """Static platforms: the null block is a real block of every layer's cache, never handed to a request."""
    _, recording, engine = engine_run
    if not tokenmill_platform.static_shapes:
        pytest.skip(f"{tokenmill_platform.name} has static_shapes=False: no null block, no buckets")
    nulls = {batch.null_block for batch in recording.batches}
    assert len(nulls) == 1, f"the null block changed between steps: {sorted(nulls)}"
    null = nulls.pop()
    assert null >= engine.num_blocks, f"null block {null} is among the {engine.num_blocks} blocks requests may use"
    for cache in engine.runner.kv_caches:
        assert cache.shape[1] > null, f"a cache {tuple(cache.shape)} has no block {null} on dim 1"


def test_distinct_step_shapes_stay_within_the_buckets(engine_run, tokenmill_platform):
    """Static platforms: the (T, B, W) shapes handed over are at most ShapeBuckets.num_shapes()."""
    _, recording, _ = engine_run
    if not tokenmill_platform.static_shapes:
        pytest.skip(f"{tokenmill_platform.name} has static_shapes=False: no null block, no buckets")
    shapes = {(b.slot_mapping.shape[0], b.seq_lens.shape[0], b.block_tables.shape[1]) for b in recording.batches}
    assert len(shapes) <= recording.buckets.num_shapes(), (shapes, recording.buckets)
