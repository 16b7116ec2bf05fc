"""GGUF block packing and the native Q4_1/Q8_0 matmul on every instruction-set path this CPU runs,
against the gguf package, float64 references and each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from tokenmill_cpu.quant_blocks import pack_q4_1, pack_q8_0
from tokenmill_cpu.quant_matmul import ISAS, available_isas, quant_matmul

LAYOUTS = {"q4_1": (pack_q4_1, GGMLQuantizationType.Q4_1), "q8_0": (pack_q8_0, GGMLQuantizationType.Q8_0)}
N, K = 40, 192  # N: two full 16-row panels and a partial one
HOST_ISAS = available_isas()


def test_the_host_runs_the_portable_path_at_least():
    assert HOST_ISAS[:1] == ("portable",), "the native matmul did not build (CI has g++)"


def gguf_weight(layout: str, rows: int = N, cols: int = K, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A weight as llama.cpp's quantiser would store it: (its dequantized floats [rows, cols], its bytes)."""
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32) * 0.05
    w[0, :32] = 0.0  # an all-zero block (scale 0)
    raw = quants.quantize(w, LAYOUTS[layout][1])
    return torch.from_numpy(quants.dequantize(raw, LAYOUTS[layout][1]).copy()), raw


def kernel(layout: str, isa: str | None = None):
    matmul = quant_matmul(layout, isa)
    if matmul is None:
        pytest.fail("the native matmul did not build (CI has g++; see the log for the compiler error)")
    return matmul


def run(layout: str, isa: str | None, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T through `isa`'s path, from the weight's GGUF blocks."""
    matmul = kernel(layout, isa)
    return matmul(x, matmul.pack(LAYOUTS[layout][0](weight)))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gguf_weights_pack_back_to_their_exact_bytes(layout):
    dequantized, raw = gguf_weight(layout)
    packed = LAYOUTS[layout][0](dequantized)
    assert np.array_equal(packed.view(N, -1).numpy(), raw)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_packing_float_weights_gives_ggml_reference_bytes(layout):
    w = np.random.default_rng(1).standard_normal((N, K)).astype(np.float32) * 0.05
    w[1, 32:64] = 0.25  # a constant block
    w[2, :32] = np.linspace(-1, 1, 32)  # codes on exact halves
    packed = LAYOUTS[layout][0](torch.from_numpy(w))
    assert np.array_equal(packed.view(N, -1).numpy(), quants.quantize(w, LAYOUTS[layout][1]))


def q8_grid(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Activations the kernel quantizes without loss: per 32 inputs, integers times a power of two,
    with one entry at +-127 so the block's scale is exactly that power of two."""
    gen = torch.Generator().manual_seed(seed)
    ints = torch.randint(-127, 128, (rows, cols // 32, 32), generator=gen)
    ints[..., 0] = 127
    scale = 2.0 ** torch.randint(-12, -4, (rows, cols // 32, 1), generator=gen)
    return (ints * scale).view(rows, cols).float()


@pytest.mark.parametrize("isa", HOST_ISAS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 8, 9, 17])
def test_exact_inputs_give_the_float64_product(layout, rows, isa):
    weight, raw = gguf_weight(layout, seed=rows)
    x = q8_grid(rows, K, seed=rows)
    out = run(layout, isa, x, weight)
    ref = x.double() @ weight.double().t()  # [rows, N]
    assert out.shape == (rows, N) and out.dtype == torch.float32
    # integer dot products are exact; only the float32 sum of K/32 block terms rounds
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item())


@pytest.mark.parametrize("isa", HOST_ISAS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_general_inputs_err_by_at_most_their_16_bit_rounding(layout, isa):
    weight, _ = gguf_weight(layout)
    x = torch.randn(6, K) * torch.logspace(-2, 2, K)  # blocks of very different magnitude
    out = run(layout, isa, x, weight)
    ref = x.double() @ weight.double().t()
    # two 8-bit levels: each input moves by at most amax(block) / (2 * 127 * 254), plus float32
    # rounding of the input and of the sum
    half_step = (x.abs().view(6, -1, 32).amax(-1) / (2 * 127 * 254)).repeat_interleave(32, dim=1).double()
    magnitude = x.double().abs() @ weight.double().abs().t()  # [6, N]
    bound = (half_step + 1e-6 * x.double().abs()) @ weight.double().abs().t() * 1.01 + 1e-5 * magnitude
    assert ((out.double() - ref).abs() <= bound).all()


@pytest.mark.parametrize("isa", HOST_ISAS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_row_never_depends_on_the_batch_or_the_thread_count(layout, isa):
    weight, _ = gguf_weight(layout, rows=300)
    matmul = kernel(layout, isa)
    blocks = matmul.pack(LAYOUTS[layout][0](weight))
    x = torch.randn(11, K)
    together = matmul(x, blocks)
    alone = torch.cat([matmul(x[i : i + 1], blocks) for i in range(11)])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single_thread = matmul(x, blocks)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(together, alone) and torch.equal(together, single_thread)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rows", [1, 7, 8, 13, 32])
def test_every_path_agrees_with_the_portable_one(layout, rows):
    """The paths quantize activations bit for bit alike; only the float sums' order differs."""
    weight, _ = gguf_weight(layout, rows=70, cols=K, seed=rows)
    x = torch.randn(rows, K)
    portable = run(layout, "portable", x, weight)
    for isa in HOST_ISAS[1:]:
        assert torch.allclose(run(layout, isa, x, weight), portable, rtol=1e-5, atol=1e-6), isa


def test_the_default_path_is_the_best_the_host_runs():
    assert kernel("q4_1").isa == HOST_ISAS[-1]


def test_a_path_the_cpu_lacks_is_refused_and_weights_stay_with_their_path():
    missing = [isa for isa in ISAS if isa not in HOST_ISAS]
    if missing:
        with pytest.raises(ValueError, match="cannot run"):
            quant_matmul("q4_1", missing[0])
    weight, _ = gguf_weight("q4_1")
    packed = kernel("q4_1", "portable").pack(pack_q4_1(weight))
    if len(HOST_ISAS) > 1:
        with pytest.raises(ValueError, match="packed for the portable path"):
            kernel("q4_1", HOST_ISAS[-1])(torch.randn(1, K), packed)


def test_packing_refuses_inputs_that_do_not_fill_blocks():
    with pytest.raises(ValueError, match="multiple of 32"):
        pack_q4_1(torch.randn(4, 40))


@pytest.mark.parametrize("layout", ["q4_1", "q8_0"])
def test_the_native_packer_gives_the_torch_references_bytes(layout):
    """quant_pack.h against quant_blocks.py's torch ops, on data that probes each rounding step:
    normal weights at several scales, constant blocks (d = 0), codes landing on .5 exactly, values
    near float16's limits, and signed zeros."""
    from tokenmill_cpu.quant_blocks import reference_q4_1, reference_q8_0
    from tokenmill_cpu.quant_matmul import pack_native

    gen = torch.Generator().manual_seed(3)
    rows = [torch.randn(64, 256, generator=gen) * scale for scale in (1e-4, 0.02, 1.0, 300.0)]
    rows.append(torch.full((4, 256), 0.37))  # constant blocks
    rows.append(torch.arange(256.0).repeat(4, 1) / 2)  # halves: ties in both quantisers
    rows.append(torch.tensor([[6e4, -6e4] * 128, [1e-8, -0.0] * 128]))  # float16's range, tiny and -0
    weight = torch.cat(rows)
    native = pack_native(layout, weight)
    if native is None:
        pytest.skip("no C++ compiler: the torch reference packs")
    reference = (reference_q4_1 if layout == "q4_1" else reference_q8_0)(weight)
    assert native.shape == reference.shape and torch.equal(native, reference)
