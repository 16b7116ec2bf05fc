"""TPPlan: every rank's query heads read the KV heads the unsplit model pairs them with."""

from __future__ import annotations

import pytest

from tokenmill.errors import TokenmillError
from tokenmill.parallel.tp_plan import TPPlan


def _plans(heads: int, kv_heads: int, world: int) -> list[TPPlan]:
    return [TPPlan.build(r, world, num_heads=heads, num_kv_heads=kv_heads, vocab_size=259, intermediate_size=32 * world)
            for r in range(world)]


@pytest.mark.parametrize("heads,kv_heads,world", [(6, 2, 2), (6, 1, 2), (6, 3, 2), (8, 2, 4), (8, 8, 4),
                                                  (12, 4, 6), (6, 6, 3), (8, 1, 8), (32, 8, 8)])
def test_each_query_head_meets_its_own_kv_head(heads, kv_heads, world):
    group = heads // kv_heads  # the unsplit model: query head h reads KV head h // group
    seen_q = []
    for plan in _plans(heads, kv_heads, world):
        local_group = plan.local_heads // plan.local_kv_heads  # how the rank's backend pairs its heads
        kv = plan.kv_heads()
        assert len(kv) == plan.local_kv_heads and plan.local_heads % plan.local_kv_heads == 0
        for i, h in enumerate(plan.q_heads()):
            assert kv[i // local_group] == h // group
        seen_q += list(plan.q_heads())
    assert seen_q == list(range(heads))


def test_kv_heads_split_without_copies_when_they_divide():
    plans = _plans(8, 4, 2)
    assert [p.kv_heads() for p in plans] == [[0, 1], [2, 3]] and plans[0].kv_replicas == 1


def test_three_kv_heads_over_two_ranks_are_replicated():
    plans = _plans(6, 3, 2)
    assert [p.kv_heads() for p in plans] == [[0, 0, 1], [1, 2, 2]]


def test_vocabulary_shards_cover_every_row_once():
    plans = _plans(6, 2, 2)
    assert [(p.vocab_start, p.vocab_shard) for p in plans] == [(0, 130), (130, 130)]  # 259 rows, padded to 260


@pytest.mark.parametrize("heads,inter,world,needle", [(6, 128, 4, "attention heads"), (8, 100, 8, "MLP width")])
def test_a_model_that_cannot_split_is_refused_by_name(heads, inter, world, needle):
    with pytest.raises(TokenmillError, match=needle):
        TPPlan.build(0, world, num_heads=heads, num_kv_heads=2, vocab_size=100, intermediate_size=inter)
