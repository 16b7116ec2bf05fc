"""GGUF block packing and the native Q4_1/Q8_0 matmul, against the gguf package and float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from tokenmill_cpu.quant_blocks import pack_q4_1, pack_q8_0
from tokenmill_cpu.quant_matmul import quant_matmul

LAYOUTS = {"q4_1": (pack_q4_1, GGMLQuantizationType.Q4_1), "q8_0": (pack_q8_0, GGMLQuantizationType.Q8_0)}
N, K = 40, 192


def gguf_weight(layout: str, rows: int = N, cols: int = K, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A weight as llama.cpp's quantiser would store it: (its dequantized floats [rows, cols], its bytes)."""
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32) * 0.05
    w[0, :32] = 0.0  # an all-zero block (scale 0)
    raw = quants.quantize(w, LAYOUTS[layout][1])
    return torch.from_numpy(quants.dequantize(raw, LAYOUTS[layout][1]).copy()), raw


def kernel(layout: str, portable: bool = False):
    matmul = quant_matmul(layout, portable)
    if matmul is None:
        pytest.fail("the native matmul did not build (CI has g++; see the log for the compiler error)")
    return matmul


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


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 9])
def test_exact_inputs_give_the_float64_product(layout, rows, portable):
    weight, raw = gguf_weight(layout, seed=rows)
    x = q8_grid(rows, K, seed=rows)
    out = kernel(layout, portable)(x, LAYOUTS[layout][0](weight))
    ref = x.double() @ weight.double().t()  # [rows, N]
    assert out.shape == (rows, N) and out.dtype == torch.float32
    # integer dot products are exact; only the float32 sum of K/32 block terms rounds
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item())


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_general_inputs_err_by_at_most_their_16_bit_rounding(layout, portable):
    weight, _ = gguf_weight(layout)
    x = torch.randn(6, K) * torch.logspace(-2, 2, K)  # blocks of very different magnitude
    out = kernel(layout, portable)(x, LAYOUTS[layout][0](weight))
    ref = x.double() @ weight.double().t()
    # two 8-bit levels: each input moves by at most amax(block) / (2 * 127 * 254), plus float32
    # rounding of the input and of the sum
    half_step = (x.abs().view(6, -1, 32).amax(-1) / (2 * 127 * 254)).repeat_interleave(32, dim=1).double()
    magnitude = x.double().abs() @ weight.double().abs().t()  # [6, N]
    bound = (half_step + 1e-6 * x.double().abs()) @ weight.double().abs().t() * 1.01 + 1e-5 * magnitude
    assert ((out.double() - ref).abs() <= bound).all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_row_never_depends_on_the_batch_or_the_thread_count(layout):
    weight, _ = gguf_weight(layout, rows=300)
    blocks = LAYOUTS[layout][0](weight)
    x = torch.randn(11, K)
    matmul = kernel(layout)
    together = matmul(x, blocks)
    alone = torch.cat([matmul(x[i : i + 1], blocks) for i in range(11)])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single_thread = matmul(x, blocks)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(together, alone) and torch.equal(together, single_thread)


def test_portable_and_simd_builds_agree():
    weight, _ = gguf_weight("q4_1")
    blocks = pack_q4_1(weight)
    x = torch.randn(5, K)
    simd, portable = kernel("q4_1")(x, blocks), kernel("q4_1", portable=True)(x, blocks)
    assert torch.allclose(simd, portable, rtol=1e-5, atol=1e-6)


def test_packing_refuses_inputs_that_do_not_fill_blocks():
    with pytest.raises(ValueError, match="multiple of 32"):
        pack_q4_1(torch.randn(4, 40))
