"""Test harness: batched prefill + greedy decode of ragged prompts through a model and the CPU plugin.

Each prompt gets its own contiguous run of KV blocks (later prompts take lower block ids, so a
request's blocks never start at 0 by accident), and every step builds a real AttentionBatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenmill.interfaces import AttentionBatch
from tokenmill.plugin_manager import PluginManager, load_plugins


@dataclass
class GreedyRun:
    """What one harness run produced, per prompt."""

    tokens: list[list[int]]  # generated token ids, max_new_tokens each
    logits: list[torch.Tensor]  # float32 [len(prompt) + max_new_tokens - 1, V]: every position's next-token logits


def cpu_plugins() -> tuple[PluginManager, object]:
    """The installed plugins and the CPU platform, found the way the engine finds them."""
    plugins = load_plugins()
    return plugins, plugins.select("cpu")


def run_greedy(
    bundle, plugins: PluginManager, platform, prompts: list[list[int]], max_new_tokens: int
) -> GreedyRun:
    """Prefill every prompt in one step, then decode all of them together greedily, step by step."""
    model, backend = bundle.model, bundle.attn_backend
    block_size = bundle.attn_spec.block_size
    tables = _block_tables(prompts, max_new_tokens, block_size)
    num_blocks = max(max(t) for t in tables) + 1
    allocator = plugins.kv_allocator(platform)
    kv_caches = allocator.allocate(bundle.arch.num_layers, backend.kv_cache_shape(num_blocks),
                                 bundle.attn_spec.kv_cache_dtype)
    seqs = [list(p) for p in prompts]
    new_lens = [len(p) for p in prompts]
    logits: list[list[torch.Tensor]] = [[] for _ in prompts]
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            step_logits = _step(model, backend, kv_caches, seqs, new_lens, tables, block_size)
            for i, rows in enumerate(step_logits):
                logits[i].append(rows)
                seqs[i].append(int(rows[-1].argmax()))
            new_lens = [1] * len(seqs)
    return GreedyRun(
        tokens=[s[len(p) :] for s, p in zip(seqs, prompts)],
        logits=[torch.cat(rows) for rows in logits],
    )


def _block_tables(prompts: list[list[int]], max_new_tokens: int, block_size: int) -> list[list[int]]:
    counts = [-(-(len(p) + max_new_tokens) // block_size) for p in prompts]
    tables, next_block = [], 0
    for count in reversed(counts):
        tables.append(list(range(next_block, next_block + count)))
        next_block += count
    return tables[::-1]


def _step(model, backend, kv_caches, seqs, new_lens, tables, block_size) -> list[torch.Tensor]:
    """Run the newest `new_lens[i]` tokens of every sequence; returns float32 logits [new_len_i, V] each."""
    ids, positions, slots = [], [], []
    for seq, n, table in zip(seqs, new_lens, tables):
        start = len(seq) - n
        ids += seq[start:]
        positions += range(start, len(seq))
        slots += [table[p // block_size] * block_size + p % block_size for p in range(start, len(seq))]
    seq_lens = [len(s) for s in seqs]
    width = max(len(t) for t in tables)
    batch = AttentionBatch(
        query_start_loc=torch.tensor([0] + list(_cumsum(new_lens)), dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32),
        slot_mapping=torch.tensor(slots, dtype=torch.int64),
        query_lens_cpu=list(new_lens),
        seq_lens_cpu=seq_lens,
        max_query_len=max(new_lens),
        max_seq_len=max(seq_lens),
    )
    metadata = backend.build_metadata(batch)
    hidden = model.forward(torch.tensor(ids), torch.tensor(positions), kv_caches, metadata)  # [T, H]
    return list(model.compute_logits(hidden).split(new_lens))


def _cumsum(values: list[int]) -> list[int]:
    total, out = 0, []
    for v in values:
        total += v
        out.append(total)
    return out
