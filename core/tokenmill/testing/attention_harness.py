"""Drives an AttentionBackend through scripted steps over a paged cache, the way the engine does.

A scenario names requests (their full lengths, and optionally leading blocks shared with an
earlier request, as a prefix-cache hit) and steps (which requests bring how many new tokens).
The harness makes random q/k/v for every full sequence, scatters block ids at random over a pool
pre-filled with garbage, feeds each step to `build_metadata` and `forward` for every layer, and
keeps each computed row so the tests can compare it with the dense reference.

A scenario with `buckets` is padded the way the engine pads a static-shape platform's steps (the
core's own StepPadding, with a null block past the request blocks); padding rows get random q/k/v
and their outputs are dropped. A backend whose `functional_cache` is True has its returned cache
threaded into the next call, as the model does.

The requests' q/k/v live on the host (in the spec's dtype): each step's inputs are cut and
padded there and moved to the device once, and the reference reads the same host values, so the
harness adds no device work of its own to the backend's (on a lazy, compiling device such as
XLA, every distinct slice would be one more compiled graph). `sync`, the platform's
ExecutionContext.sync, is called after each step's layers, before the host reads their output,
as the engine calls it once per step.

A scenario whose spec has a sliding window can `free_behind_window`, as the KV manager does
when every layer is windowed: before each step, a request's blocks wholly behind the window of
its first new token are overwritten with other (finite) garbage, as if reused by another request,
and its block-table entries for them become the null block (block 0 on eager platforms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from tokenmill.interfaces import AttentionBatch, AttentionSpec, ShapeBuckets
from tokenmill.plugin_base import optional
from tokenmill.testing.reference_attention import causal_attention_chunked
from tokenmill.testing.tolerances import ATTENTION
from tokenmill.worker.padding import StepPadding


@dataclass(slots=True)
class PagedRequest:
    """One request's full length, and a prefix hit: leading blocks already cached by another."""

    total_len: int
    shares_blocks_of: int | None = None  # index of an earlier request whose blocks it reuses
    shared_blocks: int = 0  # how many leading full blocks (and their tokens) are shared


@dataclass(slots=True)
class Scenario:
    """Requests, and per step a list of (request index, new tokens this step)."""

    spec: AttentionSpec
    requests: list[PagedRequest]
    steps: list[list[tuple[int, int]]]
    num_layers: int = 1
    seed: int = 0
    buckets: ShapeBuckets | None = None  # pad every step as for a static-shape platform
    free_behind_window: bool = False  # release blocks behind the window, as the KV manager does


@dataclass(slots=True)
class Sequence:
    """One request's full q/k/v for one layer, on the host, in the spec's dtype."""

    query: torch.Tensor  # [total_len, Hq, D]
    key: torch.Tensor  # [total_len, Hkv, D]
    value: torch.Tensor  # [total_len, Hkv, D]


@dataclass(slots=True)
class Outcome:
    """What the backend produced: per layer, per request, rows keyed by position."""

    sequences: list[list[Sequence]]  # [layer][request]
    rows: list[list[dict[int, torch.Tensor]]] = field(default_factory=list)  # [layer][request]{pos: [Hq, D]}
    step_of_row: list[dict[int, int]] = field(default_factory=list)  # [request]{pos: step index}


def run_scenario(backend, allocator, scenario: Scenario, sync: Callable[[], None] | None = None) -> Outcome:
    """Run every step of `scenario` through `backend`, with a pool from `allocator`; `sync` ends each step."""
    spec, device = scenario.spec, allocator.device
    _validate(scenario)
    gen = torch.Generator().manual_seed(scenario.seed)
    tables = _assign_blocks(scenario.requests, spec.block_size, gen)
    num_blocks = max(b for table in tables for b in table) + 1
    padding = None if scenario.buckets is None else StepPadding(scenario.buckets, spec.block_size, num_blocks)
    pool_blocks = num_blocks + (padding is not None)  # the null block is the pool's last
    caches = allocator.allocate(scenario.num_layers, backend.kv_cache_shape(pool_blocks), spec.kv_cache_dtype)
    for cache in caches:  # stale finite data, as in reused blocks: a backend must mask it out
        cache.copy_(torch.randn(cache.shape, generator=gen) * 4)
    seqs = [_make_sequences(scenario, gen) for _ in range(scenario.num_layers)]
    outcome = Outcome(seqs, [[{} for _ in scenario.requests] for _ in seqs], [{} for _ in scenario.requests])
    functional = bool(optional(backend, "functional_cache", False))
    done = [r.shared_blocks * spec.block_size for r in scenario.requests]
    for step_index, step in enumerate(scenario.steps):
        if scenario.free_behind_window:
            _free_behind_window(scenario, step, done, tables, caches, 0 if padding is None else padding.null_block, gen)
        batch, positions = _make_batch(step, done, tables, spec.block_size, device, padding)
        metadata = backend.build_metadata(batch)
        outs = []
        for layer in range(len(caches)):
            query, key, value = _step_inputs(seqs[layer], positions, batch.num_padded_tokens, gen, device)
            out = backend.forward(query, key, value, caches[layer], metadata, spec.head_size**-0.5)
            if functional:
                out, caches[layer] = _functional_result(out, caches[layer])
            _check_output_shape(out, query)
            outs.append(out)
        if sync is not None:
            sync()
        for layer, out in enumerate(outs):
            _keep_rows(outcome, layer, out, positions, step_index)
        for req, num_new in step:
            done[req] += num_new
    allocator.free(caches)
    return outcome


def _free_behind_window(scenario: Scenario, step: list[tuple[int, int]], done: list[int], tables: list[list[int]],
                        caches: list[torch.Tensor], null_block: int, gen: torch.Generator) -> None:
    """Release (garble, and point at the null block) each stepping request's blocks behind its window."""
    window, block_size = scenario.spec.sliding_window, scenario.spec.block_size
    for req, _ in step:
        behind = max(0, done[req] - window + 1) // block_size
        for index in range(behind):
            block = tables[req][index]
            if block == null_block:
                continue
            for cache in caches:
                garbage = torch.randn(cache[:, block].shape, generator=gen) * 100
                cache[:, block] = garbage.to(device=cache.device, dtype=cache.dtype)
            tables[req][index] = null_block


def _functional_result(result, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A functional backend's (output, updated cache), checked against the cache it was given."""
    assert isinstance(result, tuple) and len(result) == 2, (
        f"functional_cache is True, so forward must return (output, updated_cache), got {type(result).__name__}")
    out, updated = result
    assert updated.shape == cache.shape and updated.dtype == cache.dtype and updated.device == cache.device, (
        f"the updated cache is {tuple(updated.shape)} {updated.dtype} on {updated.device}; "
        f"it must match the cache passed in: {tuple(cache.shape)} {cache.dtype} on {cache.device}")
    return out, updated


def assert_matches_reference(outcome: Outcome, scenario: Scenario, steps: set[int] | None = None) -> None:
    """Compare every kept row (or those of `steps`) with the dense float64 reference."""
    spec = scenario.spec
    # a cache in a narrower dtype than the model's rounds k/v once more: its tolerance then applies
    tol = max(ATTENTION[spec.dtype], ATTENTION[spec.kv_cache_dtype], key=lambda t: t["atol"])
    for layer, per_request in enumerate(outcome.rows):
        for req, rows in enumerate(per_request):
            positions = sorted(p for p in rows if steps is None or outcome.step_of_row[req][p] in steps)
            if not positions:
                continue
            got = torch.stack([rows[p] for p in positions])  # [R, Hq, D]
            want = _reference_rows(outcome.sequences[layer][req], positions, spec.head_size**-0.5,
                                   getattr(spec, "sliding_window", None), getattr(spec, "logits_soft_cap", None))
            torch.testing.assert_close(
                got, want.to(got.dtype), **tol,
                msg=lambda m, L=layer, r=req: f"layer {L}, request {r} ({spec}): {m}",
            )


def _validate(scenario: Scenario) -> None:
    """Refuse a scenario that schedules more tokens than a request has, or an empty step entry."""
    if scenario.free_behind_window and (scenario.spec.sliding_window is None
                                        or any(r.shared_blocks for r in scenario.requests)):
        raise ValueError("free_behind_window needs a spec with a sliding window and requests that share no blocks")
    done = [r.shared_blocks * scenario.spec.block_size for r in scenario.requests]
    for index, step in enumerate(scenario.steps):
        for req, num_new in step:
            done[req] += num_new
            if num_new < 1 or done[req] > scenario.requests[req].total_len:
                raise ValueError(f"step {index} gives request {req} {num_new} tokens, past its length or empty")


def _reference_rows(seq: Sequence, positions: list[int], scale: float, window: int | None = None,
                    soft_cap: float | None = None) -> torch.Tensor:
    """Reference rows at `positions` (sorted), computed per run of consecutive positions."""
    parts, run_start = [], 0
    for i in range(1, len(positions) + 1):
        if i == len(positions) or positions[i] != positions[i - 1] + 1:
            first, last = positions[run_start], positions[i - 1] + 1
            parts.append(causal_attention_chunked(seq.query[first:last], seq.key, seq.value, scale, first,
                                                  window=window, soft_cap=soft_cap))
            run_start = i
    return torch.cat(parts).float()


def _assign_blocks(requests: list[PagedRequest], block_size: int, gen: torch.Generator) -> list[list[int]]:
    """Block ids per request, scattered over the pool; shared prefixes reuse the owner's ids."""
    needed = sum(-(-r.total_len // block_size) - r.shared_blocks for r in requests)
    free = torch.randperm(needed + 3, generator=gen).tolist()  # a few ids never used
    tables = []
    for r in requests:
        own = -(-r.total_len // block_size) - r.shared_blocks
        shared = tables[r.shares_blocks_of][: r.shared_blocks] if r.shared_blocks else []
        tables.append(shared + [free.pop() for _ in range(own)])
    return tables


def _make_sequences(scenario: Scenario, gen: torch.Generator) -> list[Sequence]:
    spec, seqs = scenario.spec, []
    for r in scenario.requests:
        q = torch.randn(r.total_len, spec.num_heads, spec.head_size, generator=gen)
        k = torch.randn(r.total_len, spec.num_kv_heads, spec.head_size, generator=gen)
        v = torch.randn(r.total_len, spec.num_kv_heads, spec.head_size, generator=gen)
        if r.shared_blocks:  # a prefix hit: the shared tokens have the owner's keys and values
            n = r.shared_blocks * spec.block_size
            k[:n], v[:n] = seqs[r.shares_blocks_of].key[:n], seqs[r.shares_blocks_of].value[:n]
        seqs.append(Sequence(*(t.to(spec.dtype) for t in (q, k, v))))
    return seqs


@dataclass(slots=True)
class _StepLists:
    """One step's host lists, in the shape StepPadding pads (worker.step_inputs builds the same)."""

    tokens: list[int]
    positions: list[int]
    slots: list[int]
    query_lens: list[int]
    seq_lens: list[int]
    tables: list[list[int]]


def _make_batch(
    step: list[tuple[int, int]], done: list[int], tables: list[list[int]], block_size: int, device: torch.device,
    padding: StepPadding | None = None,
) -> tuple[AttentionBatch, list[tuple[int, int, int]]]:
    """The AttentionBatch of one step, and (request, first position, count) for each request."""
    spans = [(req, done[req], n) for req, n in step]
    lists = _StepLists(
        tokens=[0] * sum(n for _, _, n in spans),  # the harness has no token ids; only the count matters
        positions=[p for _, first, n in spans for p in range(first, first + n)],
        slots=[tables[req][p // block_size] * block_size + p % block_size
               for req, first, n in spans for p in range(first, first + n)],
        query_lens=[n for _, _, n in spans],
        seq_lens=[first + n for _, first, n in spans],
        tables=[list(tables[req]) for req, _, _ in spans],
    )
    pad_tokens, pad_reqs = padding.pad(lists) if padding is not None else (0, 0)
    width = max(map(len, lists.tables))
    block_rows = [t + [0] * (width - len(t)) for t in lists.tables]  # padded with 0 (eager)
    starts = [0]
    for n in lists.query_lens:
        starts.append(starts[-1] + n)
    batch = AttentionBatch(
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(lists.seq_lens, dtype=torch.int32, device=device),
        block_tables=torch.tensor(block_rows, dtype=torch.int32, device=device),
        slot_mapping=torch.tensor(lists.slots, dtype=torch.int64, device=device),
        query_lens_cpu=lists.query_lens,
        seq_lens_cpu=lists.seq_lens,
        max_query_len=max(lists.query_lens),
        max_seq_len=max(lists.seq_lens),
        num_padded_tokens=pad_tokens,
        num_padded_reqs=pad_reqs,
        null_block=padding.null_block if padding is not None else 0,
    )
    return batch, spans


def _step_inputs(seqs: list[Sequence], positions: list[tuple[int, int, int]], num_padded: int,
                 gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The step's flattened query [T, Hq, D], key and value [T, Hkv, D], padding rows (random) last,
    cut on the host and moved to `device` once each."""
    pick = [(seqs[req], first, first + n) for req, first, n in positions]
    out = []
    for name in ("query", "key", "value"):
        rows = torch.cat([getattr(s, name)[a:b] for s, a, b in pick])  # [T_real, H, D]
        if num_padded:
            noise = torch.randn((num_padded, *rows.shape[1:]), generator=gen)
            rows = torch.cat([rows, noise.to(rows.dtype)])  # [T, H, D]
        out.append(rows.to(device))
    return tuple(out)


def _check_output_shape(out: torch.Tensor, query: torch.Tensor) -> None:
    assert out.shape == query.shape, f"forward returned shape {tuple(out.shape)}, expected {tuple(query.shape)}"
    assert out.dtype == query.dtype, f"forward returned dtype {out.dtype}, expected the query's {query.dtype}"
    assert out.device == query.device, f"forward returned a tensor on {out.device}, expected {query.device}"


def _keep_rows(outcome: Outcome, layer: int, out: torch.Tensor, positions: list[tuple[int, int, int]], step: int) -> None:
    host = out.detach().cpu().float()  # [T, Hq, D], converted on the host
    row = 0
    for req, first, n in positions:
        for i in range(n):
            outcome.rows[layer][req][first + i] = host[row + i]
            outcome.step_of_row[req][first + i] = step
        row += n
