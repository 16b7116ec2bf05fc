"""The kit's attention harness on padded steps: a correct backend passes, one that reads past seq_lens fails."""

from __future__ import annotations

import pytest
import torch

from tokenmill.interfaces import AttentionSpec
from tokenmill.testing.attention_harness import PagedRequest, Scenario, assert_matches_reference, run_scenario
from tokenmill.testing.test_attention import BUCKETS
from tokenmill_template.allocator import TemplateAllocator
from tokenmill_template.attention import TemplateAttentionBackend

SPEC = AttentionSpec(8, 2, 64, 16, torch.float32)
SCENARIO = Scenario(SPEC, [PagedRequest(n) for n in (40, 5, 21)],
                    [[(0, 20), (1, 2)], [(1, 1), (0, 17), (2, 20)], [(0, 1), (1, 1), (2, 1)], [(0, 1), (1, 1)]],
                    buckets=BUCKETS)


class _ReadsWholeRows(TemplateAttentionBackend):
    """Attends over every block-table entry, null block and stale blocks included."""

    def _gather(self, kv_cache, table, seq_len):
        blocks = kv_cache.index_select(1, table.long()).flatten(1, 2)  # [2, W * S, Hkv, D]
        return blocks[0][-seq_len:], blocks[1][-seq_len:]


def test_a_backend_that_follows_the_rules_passes_padded_steps():
    outcome = run_scenario(TemplateAttentionBackend(SPEC), TemplateAllocator(0, 0.9), SCENARIO)
    assert_matches_reference(outcome, SCENARIO)


def test_a_backend_that_reads_past_its_blocks_fails():
    outcome = run_scenario(_ReadsWholeRows(SPEC), TemplateAllocator(0, 0.9), SCENARIO)
    with pytest.raises(AssertionError):
        assert_matches_reference(outcome, SCENARIO)
