"""The attention batch of one request's first `num_tokens` tokens: the start-up steps' dummy input."""

from __future__ import annotations

import torch

from tokenmill.interfaces import AttentionBatch


def first_tokens_batch(num_tokens: int, num_blocks: int, device: torch.device) -> AttentionBatch:
    """One request at positions 0 .. num_tokens - 1 in slots 0 .. num_tokens - 1, its block table
    blocks 0 .. num_blocks - 1 (the profile run's prefill; with one token, the warm-up's decode)."""
    return AttentionBatch(
        query_start_loc=torch.tensor([0, num_tokens], dtype=torch.int32, device=device),
        seq_lens=torch.tensor([num_tokens], dtype=torch.int32, device=device),
        block_tables=torch.arange(num_blocks, dtype=torch.int32, device=device).unsqueeze(0),  # [1, nb]
        slot_mapping=torch.arange(num_tokens, dtype=torch.int64, device=device),
        query_lens_cpu=[num_tokens], seq_lens_cpu=[num_tokens], max_query_len=num_tokens, max_seq_len=num_tokens,
    )
