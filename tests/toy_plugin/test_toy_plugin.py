"""The out-of-tree toy plugin: installed like a vendor's, picked only by name, and it computes right."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import tokenmill
from tokenmill.interfaces import AttentionBatch, AttentionSpec
from tokenmill.plugin_manager import load_plugins

pytest.importorskip("tokenmill_toy", reason="install the example plugin: pip install -e tests/toy_plugin")


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch):
    for name in ("TOKENMILL_DEVICE", "TOKENMILL_PLUGINS", "TOKENMILL_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(name, raising=False)
    return load_plugins()


def test_toy_is_discovered_through_its_entry_point(manager) -> None:
    record = manager.records["toy"]
    assert (record.distribution, record.availability.available) == ("tokenmill-toy", True)


def test_toy_is_chosen_only_by_name(manager, monkeypatch: pytest.MonkeyPatch) -> None:
    assert manager.select().name != "toy"
    assert manager.select("toy").name == "toy"
    monkeypatch.setenv("TOKENMILL_DEVICE", "toy")
    assert manager.select().name == "toy"


def test_core_does_not_know_the_toy_exists() -> None:
    core = Path(tokenmill.__file__).parent
    mentions = [p for p in core.rglob("*.py") if "tokenmill_toy" in p.read_text(encoding="utf-8")]
    assert mentions == []


def test_toy_paged_prefill_matches_dense_causal_attention(manager) -> None:
    """Two ragged prompts through the toy's backend and allocator vs SDPA on unpaged K/V."""
    torch.manual_seed(0)
    platform = manager.select("toy")
    spec = AttentionSpec(num_heads=4, num_kv_heads=2, head_size=16, block_size=4, dtype=torch.float32)
    backend = manager.attention_backend(platform, spec)
    allocator = manager.kv_allocator(platform, 0)
    (cache,) = allocator.allocate(1, backend.kv_cache_shape(8), spec.dtype)  # [2, 8, 4, 2, 16]
    lens = [5, 3]
    tables = torch.tensor([[3, 1], [6, 0]], dtype=torch.int32)  # blocks out of order on purpose
    slots = [int(tables[b, t // 4]) * 4 + t % 4 for b, n in enumerate(lens) for t in range(n)]
    batch = AttentionBatch(
        query_start_loc=torch.tensor([0, 5, 8], dtype=torch.int32), seq_lens=torch.tensor(lens, dtype=torch.int32),
        block_tables=tables, slot_mapping=torch.tensor(slots, dtype=torch.int64),
        query_lens_cpu=lens, seq_lens_cpu=lens, max_query_len=5, max_seq_len=5,
    )
    q, k, v = torch.randn(8, 4, 16), torch.randn(8, 2, 16), torch.randn(8, 2, 16)  # [T, H, D]
    out = backend.forward(q, k, v, cache, backend.build_metadata(batch), 16**-0.5)  # [T, Hq, D]
    for start, end in ((0, 5), (5, 8)):
        qh = q[start:end].transpose(0, 1)  # [Hq, L, D]
        kh = k[start:end].transpose(0, 1).repeat_interleave(2, dim=0)  # [Hq, L, D]
        vh = v[start:end].transpose(0, 1).repeat_interleave(2, dim=0)
        expected = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True).transpose(0, 1)
        torch.testing.assert_close(out[start:end], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache[0].view(-1, 2, 16)[slots], k)  # keys landed in their slots
