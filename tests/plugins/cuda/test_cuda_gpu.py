"""GPU checks of the CUDA plugin: allocator sizing, CUDA graphs vs eager, engine output vs CPU and HF."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
GiB = 1 << 30
PROMPTS = [[5, 6, 7, 8], [9, 10, 11], [100, 200, 300, 400, 500], [42], [7] * 20, [1, 3, 5, 7, 9, 11],
           list(range(30, 70)), [900, 901, 902]]


def test_allocator_budget_subtracts_the_profiled_peak():
    from tokenmill_cuda.allocator import CudaKVAllocator, KVBudgetError

    alloc = CudaKVAllocator(0, gpu_memory_utilization=0.5)
    peak = alloc.profile_peak(lambda: torch.empty(GiB, dtype=torch.uint8, device="cuda").fill_(1))
    assert GiB <= peak < GiB + 64 * (1 << 20)
    free, total = torch.cuda.mem_get_info()
    budget = alloc.available_kv_bytes(None)
    assert abs(budget - (int(0.5 * total) - (total - free) - peak)) < 64 * (1 << 20)
    alloc.gpu_memory_utilization = 0.01
    with pytest.raises(KVBudgetError, match="gpu_memory_utilization"):
        alloc.available_kv_bytes(None)


def _tiny_model(random_llama, tmp_path, dtype):
    from tokenmill.interfaces import AttentionSpec
    from tokenmill.loaders import load_model_bundle
    from tokenmill.plugin_manager import load_plugins

    folder = random_llama.write_model(tmp_path / "tiny", random_llama.TINY, device="cpu")
    manager = load_plugins()
    platform = manager.select("cuda")
    bundle = load_model_bundle(str(folder), platform=platform, plugins=manager, dtype=dtype, block_size=16, max_model_len=1024)
    assert isinstance(bundle.attn_backend.spec, AttentionSpec)
    return bundle


def _decode_batch(seq_lens: list[int], blocks_per_req: int):
    from tokenmill.interfaces import AttentionBatch

    tables = [[r * blocks_per_req + j for j in range(blocks_per_req)] for r in range(len(seq_lens))]
    slots = [t[(s - 1) // 16] * 16 + (s - 1) % 16 for t, s in zip(tables, seq_lens)]
    dev = "cuda"
    return AttentionBatch(
        query_start_loc=torch.arange(len(seq_lens) + 1, dtype=torch.int32, device=dev),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=dev),
        block_tables=torch.tensor(tables, dtype=torch.int32, device=dev),
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=dev),
        query_lens_cpu=[1] * len(seq_lens), seq_lens_cpu=list(seq_lens),
        max_query_len=1, max_seq_len=max(seq_lens),
    )


@pytest.mark.parametrize("gemv_rows", [0, 1])
@torch.inference_mode()
def test_cuda_graph_replay_matches_eager_with_padding(random_llama, tmp_path, gemv_rows):
    """cuBLAS graphs write bit-identical K/V; a GEMV-captured batch-1 graph rounds its own way."""
    from tokenmill_cuda.graph_runner import CudaGraphRunner

    bundle = _tiny_model(random_llama, tmp_path, "bfloat16")
    backend, arch = bundle.attn_backend, bundle.arch
    shape = backend.kv_cache_shape(20 * 8)
    init = torch.randn(shape, device="cuda").to(torch.bfloat16)
    eager_caches = [init.clone() for _ in range(arch.num_layers)]
    graph_caches = [init.clone() for _ in range(arch.num_layers)]
    graphed = CudaGraphRunner({"max_num_seqs": 16}).wrap(lambda i, p, m: bundle.model(i, p, graph_caches, m))
    graphed.gemv_rows = gemv_rows
    gen = torch.Generator().manual_seed(0)
    for batch in (3, 5, 1, 16, 17, 3):  # 3 -> graph 4, 5 -> graph 8, 17 -> eager
        seq_lens = torch.randint(1, 120, (batch,), generator=gen).tolist()
        md = backend.build_metadata(_decode_batch(seq_lens, 8))
        ids = torch.randint(0, arch.vocab_size, (batch,), generator=gen).cuda()
        pos = torch.tensor(seq_lens, device="cuda") - 1
        want = bundle.model(ids, pos, eager_caches, md)
        got = graphed(ids, pos, md)
        torch.testing.assert_close(got.float(), want.float(), atol=3e-2, rtol=3e-2)
        for e, g in zip(eager_caches, graph_caches):
            if batch > gemv_rows:
                assert torch.equal(e, g), "graph replay must write the same K/V as eager"
            else:
                torch.testing.assert_close(g.float(), e.float(), atol=3e-2, rtol=3e-2)
                g.copy_(e)  # later batches compare exactly again
    assert sorted(graphed.graphs) == [1, 2, 4, 8, 16], "the first replay captures every size"
    assert graphed.capture_seconds < 10


def _compiled_variants(kernel) -> int:
    """How many specializations of a Triton kernel this process has compiled (triton 3.x's caches)."""
    return sum(len(caches[0]) for caches in kernel.device_caches.values())


def test_engine_start_captures_every_graph_and_compiles_every_decode_variant(random_llama, tmp_path):
    """Nothing compiles or captures while serving: mixed steps at any split count meet compiled kernels."""
    from tokenmill import LLM, SamplingParams
    from tokenmill_triton import decode_attention

    folder = random_llama.write_model(tmp_path / "tiny", random_llama.TINY, device="cpu")
    llm = LLM(model=str(folder), device="cuda", dtype="bfloat16", max_num_seqs=16, max_model_len=1024)
    step = llm.engine.runner._step
    assert sorted(step.graphs) == step.sizes, "the start-up warm-up step captures every graph size"
    compiled = _compiled_variants(decode_attention._decode_kernel)
    assert compiled >= 12, "six split counts of both step kinds"
    prompts = [[5] * n for n in (3, 40, 200, 700, 9, 300)]  # prefills beside decodes of many lengths
    lens = [60, 5, 30, 12, 80, 2]
    llm.generate(prompts, [SamplingParams(max_tokens=n, ignore_eos=True) for n in lens], use_tqdm=False)
    assert _compiled_variants(decode_attention._decode_kernel) == compiled, "serving compiled a decode variant"
    assert sorted(step.graphs) == step.sizes


def _greedy(model_dir: str, device: str, dtype: str, **kw) -> list[list[int]]:
    from tokenmill import LLM, SamplingParams

    llm = LLM(model=model_dir, device=device, dtype=dtype, **kw)
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=12, temperature=0.0), use_tqdm=False)
    return [o.outputs[0].token_ids for o in outs]


@pytest.mark.slow
def test_engine_greedy_on_cuda_float32_equals_cpu_plugin(random_llama, tmp_path):
    folder = str(random_llama.write_model(tmp_path / "tiny", random_llama.TINY, device="cpu"))
    cpu = _greedy(folder, "cpu", "float32")
    assert _greedy(folder, "cuda", "float32", kv_cache_memory=GiB) == cpu
    assert _greedy(folder, "cuda", "float32", kv_cache_memory=GiB, enforce_eager=True) == cpu


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_engine_graphs_and_pdl_match_eager_greedy(random_llama, tmp_path, dtype):
    """Graph replay (with GEMVs at batch 1 and PDL launches) picks the tokens eager mode picks."""
    folder = str(random_llama.write_model(tmp_path / "tiny", random_llama.TINY, device="cpu"))
    graphs = _greedy(folder, "cuda", dtype, kv_cache_memory=GiB)
    eager = _greedy(folder, "cuda", dtype, kv_cache_memory=GiB, enforce_eager=True)
    agree = sum(g[:4] == e[:4] for g, e in zip(graphs, eager))
    assert agree == 8 if dtype == "float32" else agree >= 6, (graphs, eager)  # bf16 GEMVs round their own way


@pytest.mark.slow
def test_engine_bf16_matches_transformers_greedy(random_llama, tmp_path):
    import transformers

    folder = str(random_llama.write_model(tmp_path / "tiny", random_llama.TINY, device="cpu"))
    ours = _greedy(folder, "cuda", "bfloat16", kv_cache_memory=GiB)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).cuda()
    agree = 0
    for prompt, got in zip(PROMPTS, ours):
        ref = hf.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=12, do_sample=False)[0, len(prompt):]
        agree += int(got[:4] == ref[:4].tolist())  # bf16 vs fp32 may drift late in a random model
    assert agree >= 6, f"only {agree}/8 prompts agree with transformers on their first 4 greedy tokens"


def test_gemv_tuner_picks_a_candidate_per_shape_and_keeps_results_exact():
    import torch.nn.functional as F
    from tokenmill_triton import gemv_tuning
    from tokenmill_triton.gemv import gemv

    gemv_tuning.forget()
    recorder = gemv_tuning.ShapeRecorder()
    x = torch.randn(1, 1024, device="cuda", dtype=torch.bfloat16)
    shapes = [(3072, 1024), (1024, 4096)]
    weights = {s: [torch.randn(*s, device="cuda", dtype=torch.bfloat16) for _ in range(3)] for s in shapes}
    for s, ws in weights.items():
        for w in ws + ws[:1]:  # a weight seen twice is timed once
            recorder.record(torch.randn(1, s[1], device="cuda", dtype=torch.bfloat16), w)
    assert [len(v[1]) for v in recorder.groups.values()] == [3, 3]
    picked = recorder.tune(gemv)
    assert set(picked) == {(n, k, torch.bfloat16, 0) for n, k in shapes}
    assert all(cfg in gemv_tuning.CANDIDATES for cfg in picked.values())
    w = weights[(3072, 1024)][0]
    assert gemv_tuning.chosen_config(x, w) == picked[(3072, 1024, torch.bfloat16, 0)]
    torch.testing.assert_close(gemv(x, w).float(), F.linear(x.float(), w.float()), rtol=2e-2, atol=2e-2)
    gemv_tuning.forget()
