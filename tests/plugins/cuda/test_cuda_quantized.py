"""GPU checks of the quantized linears: the Triton int4 kernel at Llama sizes, fp8 through _scaled_mm,
and a GPTQ checkpoint end to end on CUDA against its dequantized float twin."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
_LOADER_TESTS = Path(__file__).resolve().parents[2] / "core" / "loaders"


@pytest.mark.parametrize("rows", [1, 3, 16, 200])
@pytest.mark.parametrize("n,k,group", [(4096, 4096, 128), (1024, 14336, 128), (6144, 4096, 32)])
def test_int4_kernel_at_llama_sizes(rows, n, k, group):
    from tokenmill_triton.int4_matmul import int4_matmul, pack_int4

    gen = torch.Generator(device="cuda").manual_seed(rows + n)
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda", generator=gen)
    scales = (torch.rand(n, k // group, device="cuda", generator=gen) * 0.01 + 0.001).half().float()
    zeros = torch.randint(0, 16, (n, k // group), device="cuda", generator=gen).float()
    dense = ((codes.float().view(n, -1, group) - zeros[..., None]) * scales[..., None]).view(n, k)
    x = torch.randn(rows, k, device="cuda", generator=gen).to(torch.bfloat16)
    got = int4_matmul(x, pack_int4(codes, scales, zeros, group))
    want = x.double() @ dense.double().T
    assert (got.double() - want).abs().max() <= 1e-2 * want.abs().max()


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("rows", [1, 16, 300])
def test_fp8_method_against_the_dequantized_weight(per_channel, rows):
    from tokenmill.interfaces import StoredFp8
    from tokenmill.plugin_manager import load_plugins

    manager = load_plugins()
    method = manager.linear_method(manager.select("cuda"), "fp8")
    if torch.cuda.get_device_capability() < (8, 9):
        assert method is None
        return
    gen = torch.Generator(device="cuda").manual_seed(rows)
    n, k = 2048, 4096
    w = torch.randn(n, k, device="cuda", generator=gen)
    scale = (w.abs().amax(1) if per_channel else w.abs().amax().reshape(1)) / 448
    codes = (w / (scale[:, None] if per_channel else scale)).to(torch.float8_e4m3fn)
    dense = codes.float() * (scale[:, None] if per_channel else scale)
    packed = method.pack_stored(StoredFp8(codes, scale), dense.bfloat16())
    x = torch.randn(rows, k, device="cuda", generator=gen).bfloat16()
    got = method.apply(packed, x)
    want = x.double() @ dense.double().T
    assert got.dtype == torch.bfloat16 and (got.double() - want).abs().max() <= 6e-2 * want.abs().max()


@pytest.mark.parametrize("case", ["gptq-g32-actorder", "awq-g128", "fp8-channel"])
def test_quantized_checkpoint_on_cuda_matches_its_float_twin(tmp_path, case):
    """Every packed layer of the loaded checkpoint against the same layer of the dequantized float model."""
    sys.path[:0] = [str(_LOADER_TESTS), str(_LOADER_TESTS.parent / "models")]
    from test_quantized_checkpoints import write_pair

    from tokenmill.loaders import load_model_bundle
    from tokenmill.models.packed_linear import PackedLinear
    from tokenmill.plugin_manager import load_plugins

    quantized, dense = write_pair(tmp_path, case)
    manager = load_plugins()
    platform = manager.select("cuda")
    packed, twin = (load_model_bundle(str(p), platform=platform, plugins=manager, dtype="bfloat16",
                                      quantization="auto").model for p in (quantized, dense))
    layers = {n: m for n, m in packed.named_modules() if isinstance(m, PackedLinear)}
    fp8_kernels = torch.cuda.get_device_capability() >= (8, 9)
    assert len(layers) == (0 if case.startswith("fp8") and not fp8_kernels else 8)
    assert any(m.input_order is not None for m in layers.values()) == case.endswith("actorder")
    bound = 6e-2 if case.startswith("fp8") else 2e-2
    gen = torch.Generator(device="cuda").manual_seed(0)
    with torch.inference_mode():
        for name, layer in layers.items():
            x = torch.randn(5, layer.in_features, device="cuda", generator=gen).bfloat16()
            got, want = layer(x).float(), twin.get_submodule(name)(x).float()
            assert (got - want).abs().max() <= bound * want.abs().max(), name


def test_an_engine_run_on_a_gptq_checkpoint_on_cuda(tmp_path):
    sys.path[:0] = [str(_LOADER_TESTS), str(_LOADER_TESTS.parent / "models")]
    from test_quantized_checkpoints import write_pair

    from tokenmill import LLM, SamplingParams

    quantized, _ = write_pair(tmp_path, "gptq-g128-sym")
    llm = LLM(str(quantized), dtype="bfloat16", gpu_memory_utilization=0.3)
    outs = llm.generate(["hello there", "abc"], SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True),
                        use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outs] == [8, 8]
