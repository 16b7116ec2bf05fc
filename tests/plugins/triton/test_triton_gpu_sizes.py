"""Triton attention at Llama-3-8B sizes on the GPU: long contexts, big batches, every head size."""

from __future__ import annotations

import pytest
import torch

from test_triton_attention import _run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_llama3_8b_decode_batch_and_long_context(dtype):
    gen = torch.Generator().manual_seed(0)
    seq_lens = torch.randint(1, 3000, (64,), generator=gen).tolist() + [8191]
    _run([1] * len(seq_lens), seq_lens, 32, 8, 128, 16, dtype)


@pytest.mark.parametrize("head_size,block_size", [(64, 16), (128, 32), (256, 16)])
def test_mixed_prefill_prefix_and_decode(head_size, block_size):
    query_lens = [1000, 1, 333, 1, 77]
    seq_lens = [1500, 2000, 333, 5, 1100]  # prefix hits of 500 and 1023 tokens
    _run(query_lens, seq_lens, 16, 4, head_size, block_size, torch.bfloat16, seed=head_size)
