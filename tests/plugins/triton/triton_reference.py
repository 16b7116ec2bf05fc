"""Random paged-attention cases and a float64 torch reference for the Triton kernel tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenmill.interfaces import AttentionBatch


def test_device() -> torch.device:
    """The GPU when there is one, else the host (the kernels then run in Triton's interpreter)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


test_device.__test__ = False  # a helper, not a test


@dataclass
class PagedCase:
    """One step: a cache already holding each request's earlier tokens, plus the new tokens."""

    batch: AttentionBatch
    query: torch.Tensor  # [T, Hq, D]
    key: torch.Tensor  # [T, Hkv, D]
    value: torch.Tensor  # [T, Hkv, D]
    kv_cache: torch.Tensor  # [2, N, S, Hkv, D], prefixes filled, new slots still random


def make_case(
    query_lens: list[int], seq_lens: list[int], num_heads: int, num_kv_heads: int, head_size: int,
    block_size: int, dtype: torch.dtype, device: torch.device, seed: int = 0,
) -> PagedCase:
    """Random q/k/v and a shuffled block assignment, so pages of a request are not contiguous."""
    gen = torch.Generator().manual_seed(seed)
    blocks_per_req = [-(-s // block_size) for s in seq_lens]
    num_blocks = sum(blocks_per_req) + 3
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    width = max(blocks_per_req)
    table = torch.zeros((len(seq_lens), width), dtype=torch.int32)
    slots, start = [], 0
    for b, (q, s) in enumerate(zip(query_lens, seq_lens)):
        ids = perm[start : start + blocks_per_req[b]]
        start += blocks_per_req[b]
        table[b, : len(ids)] = torch.tensor(ids, dtype=torch.int32)
        slots += [ids[p // block_size] * block_size + p % block_size for p in range(s - q, s)]
    total = sum(query_lens)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(dtype)  # noqa: E731
    batch = AttentionBatch(
        query_start_loc=torch.tensor([0] + list(torch.tensor(query_lens).cumsum(0).tolist()), dtype=torch.int32).to(device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32).to(device),
        block_tables=table.to(device),
        slot_mapping=torch.tensor(slots, dtype=torch.int64).to(device),
        query_lens_cpu=list(query_lens),
        seq_lens_cpu=list(seq_lens),
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
    )
    return PagedCase(
        batch=batch,
        query=rand(total, num_heads, head_size).to(device),
        key=rand(total, num_kv_heads, head_size).to(device),
        value=rand(total, num_kv_heads, head_size).to(device),
        kv_cache=rand(2, num_blocks, block_size, num_kv_heads, head_size).to(device),
    )


def write_reference(case: PagedCase) -> torch.Tensor:
    """The cache after writing the new K/V at slot_mapping, with plain indexing (a new tensor)."""
    cache = case.kv_cache.clone()
    flat = cache.view(2, -1, *cache.shape[3:])  # [2, N*S, Hkv, D]
    flat[0, case.batch.slot_mapping] = case.key
    flat[1, case.batch.slot_mapping] = case.value
    return cache


def attention_reference(case: PagedCase, cache: torch.Tensor, scale: float, window: int | None = None,
                        soft_cap: float | None = None) -> torch.Tensor:
    """[T, Hq, D] float64: each new row attends causally over its request's gathered cache
    (with a window W: the row at position p over keys p - W < j <= p)."""
    b = case.batch
    block_size, num_kv_heads = cache.shape[2], cache.shape[3]
    group = case.query.shape[1] // num_kv_heads
    out = torch.zeros(case.query.shape, dtype=torch.float64)
    starts = b.query_start_loc.cpu().tolist()
    for r, (q_len, s_len) in enumerate(zip(b.query_lens_cpu, b.seq_lens_cpu)):
        pos = torch.arange(s_len)
        slots = b.block_tables[r].cpu().long()[pos // block_size] * block_size + pos % block_size
        k = cache[0].reshape(-1, num_kv_heads, cache.shape[4])[slots.to(cache.device)].cpu().double()  # [s, Hkv, D]
        v = cache[1].reshape(-1, num_kv_heads, cache.shape[4])[slots.to(cache.device)].cpu().double()
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)  # [s, Hq, D]
        q = case.query[starts[r] : starts[r] + q_len].cpu().double()  # [q, Hq, D]
        scores = torch.einsum("qhd,khd->hqk", q, k) * scale
        if soft_cap is not None:
            scores = torch.tanh(scores / soft_cap) * soft_cap
        rows = (s_len - q_len + torch.arange(q_len))[:, None]  # [q, 1], each row's position
        visible = pos[None, :] <= rows  # [q, s]
        if window is not None:
            visible &= pos[None, :] > rows - window
        probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
        out[starts[r] : starts[r] + q_len] = torch.einsum("hqk,khd->qhd", probs, v)
    return out


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out = out.detach().cpu().double()
    return float((out - ref).norm() / ref.norm())
