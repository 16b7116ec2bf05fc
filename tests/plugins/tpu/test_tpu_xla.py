"""The tpu plugin on torch_xla (XLA's CPU device here): layout, availability, bounded compiles, the CPU's tokens.

Runs in the torch-xla venv (scripts/test.sh builds it); elsewhere torch_xla is absent and the
module is skipped as a whole (`tokenmill plugins` then says why tpu is unavailable, which
tests/core/test_cli_plugins.py checks).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torch_xla", reason="torch_xla is not installed: these run in the torch-xla venv")

from torch_xla.experimental.custom_kernel import ragged_paged_attention  # noqa: E402

from tokenmill.config import EngineArgs  # noqa: E402
from tokenmill.engine.core import EngineCore  # noqa: E402
from tokenmill.interfaces import AttentionBatch, AttentionSpec  # noqa: E402
from tokenmill.plugin_manager import load_plugins  # noqa: E402
from tokenmill.sampling import SamplingParams  # noqa: E402
from tokenmill.testing.tiny_model import write_tiny_llama  # noqa: E402

import tokenmill_tpu  # noqa: E402
from tokenmill_tpu import platform as tpu_platform  # noqa: E402
from tokenmill_tpu import attention as tpu_attention  # noqa: E402
from tokenmill_tpu import xla_runtime  # noqa: E402
from tokenmill_tpu.attention import TpuAttentionBackend, build_tpu_metadata  # noqa: E402
from tokenmill_tpu.buckets import step_shapes, tpu_buckets  # noqa: E402

MiB = 1 << 20
PROMPTS = [list(range(5, 45)), [7, 8, 9], list(range(100, 121)), [3] * 9]


@pytest.mark.parametrize("few_requests", [0, 4], ids=["per-token-gathers", "all-requests-keys"])
def test_the_cache_layout_is_the_ragged_kernels_kv_pages(monkeypatch, few_requests):
    """Both gather paths (attend, and attend_all for B <= FEW_REQUESTS) on the host equal torch_xla's own ragged
    paged attention reference (use_kernel=False) over cache[0], which is what the TPU kernel path hands the Pallas kernel."""
    monkeypatch.setattr(tpu_attention, "FEW_REQUESTS", few_requests)
    torch.manual_seed(0)
    spec = AttentionSpec(4, 2, 32, 16, torch.float32)
    backend = TpuAttentionBackend(spec, torch.device("cpu"), use_kernel=False)
    cache = torch.randn(backend.kv_cache_shape(12))  # stale data everywhere
    query_lens, seq_lens, tables = [5, 1, 3], [20, 9, 3], [[3, 7], [5, 0], [9, 0]]
    slots = [b * 16 + p for (b0, b1), q, s in zip(tables, query_lens, seq_lens)
             for p, b in ((pos % 16, (b0, b1)[pos // 16]) for pos in range(s - q, s))]
    batch = AttentionBatch(
        query_start_loc=torch.tensor([0, 5, 6, 9], dtype=torch.int32), seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        block_tables=torch.tensor(tables, dtype=torch.int32), slot_mapping=torch.tensor(slots, dtype=torch.int64),
        query_lens_cpu=query_lens, seq_lens_cpu=seq_lens, max_query_len=5, max_seq_len=20)
    q, k, v = torch.randn(9, 4, 32), torch.randn(9, 2, 32), torch.randn(9, 2, 32)
    md = build_tpu_metadata(batch, torch.device("cpu"))
    out, updated = backend.forward(q, k, v, cache, md, 32 ** -0.5)
    want = ragged_paged_attention(q, updated[0], md.seq_lens, md.block_tables, md.query_start_loc, md.num_seqs,
                                  sm_scale=32 ** -0.5, use_kernel=False)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    flat = updated[0].reshape(-1, 4, 32)
    torch.testing.assert_close(flat[slots[0], 0::2], k[0]) and torch.testing.assert_close(flat[slots[0], 1::2], v[0])


def test_without_pjrt_cpu_asked_for_tpu_is_unavailable_and_says_how(monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", "GPU")
    availability = tokenmill_tpu.tokenmill_platform().is_available()
    assert not availability.available and "PJRT_DEVICE=GPU is not a device this plugin drives" in availability.reason
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    platform = tpu_platform.make_platform()
    assert platform.is_available().available and "XLA's CPU device" in platform.is_available().reason
    assert platform.priority < 10, "XLA's CPU device must never outrank the cpu plugin"


def test_step_shapes_cover_every_padded_step_and_stay_few():
    buckets = tpu_buckets({"max_num_batched_tokens": 32, "max_num_seqs": 4, "max_blocks_per_seq": 40})
    assert buckets.token_counts == (16, 32) and buckets.batch_sizes == (1, 4, 8)
    assert buckets.block_table_widths == (4, 16, 64)
    shapes = step_shapes(buckets)
    assert (4, 4, 16, False) in shapes and (32, 8, 4, True) in shapes
    decodes = len(buckets.batch_sizes) * len(buckets.block_table_widths)  # (B, B, W): one per batch and width
    assert len(shapes) <= buckets.num_shapes() + decodes and len(set(shapes)) == len(shapes)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(write_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


def _greedy(model: str, device: str) -> tuple[list[list[int]], EngineCore]:
    engine = EngineCore(EngineArgs(model=model, device=device, dtype="float32", block_size=16, max_num_seqs=4,
                                   max_num_batched_tokens=32, max_model_len=128, kv_cache_memory=4 * MiB, seed=0),
                        plugins=load_plugins())
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(str(i), prompt, params)
    final = {}
    while engine.has_unfinished_requests():
        final.update({o.request_id: o for o in engine.step() if o.finished})
    return [final[str(i)].outputs[0].token_ids for i in range(len(PROMPTS))], engine


def test_greedy_tokens_equal_the_cpu_plugin_and_serving_compiles_no_forward_graph(monkeypatch, tiny_model):
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    before = xla_runtime.compile_count()
    tokens, engine = _greedy(tiny_model, "tpu")
    step = engine.runner._step
    assert step.warmup_compiles > 0, "the forward graphs must compile at start-up"
    assert step.forward_compiles == step.warmup_compiles, "serving compiled a forward graph the warm-up missed"
    # What serving compiles is the core's sampling: small graphs, per padded batch size.
    serving = xla_runtime.compile_count() - before - step.warmup_compiles
    assert serving <= 3 * len(engine.runner.padding.buckets.batch_sizes), serving
    assert tokens == _greedy(tiny_model, "cpu")[0]
