"""Tensor parallelism 2 on spawned processes over gloo gives the logits and tokens of one rank.

Each model splits its KV heads a different way (tp_models.VARIANTS): evenly, one KV head shared
by both ranks, and three KV heads replicated to six. The engine under test is the real one: this
test process is rank 0 and a spawned process is rank 1.
"""

from __future__ import annotations

import pytest
import torch

from tokenmill.interfaces import AttentionBatch
from tokenmill.sampling.params import SamplingParams

PROMPTS = ["hello world", "abc", "the quick brown fox", "tensor", "x", "parallel ranks agree",
           "0123456789", "a longer prompt that spans more than one block of sixteen tokens"]


def prefill_logits(engine, token_ids: list[int]) -> torch.Tensor:
    """float32 [T, V]: one prompt's every row, through the engine's runner (and so every rank)."""
    n = len(token_ids)
    blocks = -(-n // engine.args.block_size)
    batch = AttentionBatch(
        query_start_loc=torch.tensor([0, n], dtype=torch.int32), seq_lens=torch.tensor([n], dtype=torch.int32),
        block_tables=torch.arange(blocks, dtype=torch.int32).unsqueeze(0),
        slot_mapping=torch.arange(n, dtype=torch.int64), query_lens_cpu=[n], seq_lens_cpu=[n],
        max_query_len=n, max_seq_len=n)
    ids = torch.tensor(token_ids, dtype=torch.int64)
    with engine.execution.guard():
        return engine.runner.forward_batch(ids, torch.arange(n), batch, None).clone()


def greedy(engine, prompts: list[str], max_tokens: int = 16) -> list[list[int]]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        engine.add_request(str(i), prompt, params, final_only=True)
    done = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            done[out.request_id] = out.outputs[0].token_ids
    return [done[str(i)] for i in range(len(prompts))]


@pytest.mark.parametrize("variant", ["kv2", "kv1", "kv3", "moe"])
def test_two_ranks_match_one(variant, tp_model_dirs, make_tp_engine):
    model = tp_model_dirs[variant]
    prompt = list(range(3, 40))  # 37 tokens: three blocks
    one = make_tp_engine(model)
    want_logits, want_tokens = prefill_logits(one, prompt), greedy(one, PROMPTS)
    one.shutdown()
    two = make_tp_engine(model, tensor_parallel_size=2)
    assert two.executor is not None and two.executor.worker_pids()
    got_logits = prefill_logits(two, prompt)
    assert got_logits.shape == want_logits.shape == (37, 259)
    torch.testing.assert_close(got_logits, want_logits, atol=2e-4, rtol=1e-4)
    assert greedy(two, PROMPTS) == want_tokens
    assert two.num_blocks >= one.num_blocks  # each rank holds a share of the heads: at least as many blocks


@pytest.mark.parametrize("variant", ["kv2", "moe"])
def test_packed_linears_split_too(variant, tp_model_dirs, make_tp_engine):
    """int8 layers (and experts) are sharded before packing: each rank packs its own slice."""
    model = tp_model_dirs[variant]
    prompt = list(range(3, 40))
    one = make_tp_engine(model, quantization="int8")
    want = prefill_logits(one, prompt)
    one.shutdown()
    two = make_tp_engine(model, quantization="int8", tensor_parallel_size=2)
    assert two.bundle.packed_layers.get("int8", 0) > 0
    got = prefill_logits(two, prompt)
    torch.testing.assert_close(got, want, atol=2e-3 * want.abs().max().item(), rtol=0)
