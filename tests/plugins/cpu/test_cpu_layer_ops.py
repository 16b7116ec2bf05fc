"""The native layer ops (norms, rotary, silu_and_mul) against the core's reference ops, on every path this
CPU runs (layer_ops.cpp's runtime choice, pinned)."""

from __future__ import annotations

import pytest
import torch

from tokenmill.ops import reference
from tokenmill.plugin_manager import load_plugins
from tokenmill_cpu import native_build
from tokenmill_cpu.layer_ops import ISAS, available_isas, layer_ops, use_isa

HEAD = 64
REFERENCES = {name: getattr(reference, name) for name in ("rms_norm", "fused_add_rms_norm", "silu_and_mul", "rotary")}


@pytest.fixture(params=ISAS)
def ops(request) -> dict:
    """The native ops with each path of the library in turn pinned, then the default back."""
    built = layer_ops(REFERENCES)
    if not built:
        pytest.fail("the native layer ops did not build (CI has g++; see the log for the compiler error)")
    if request.param not in available_isas():
        pytest.skip(f"this CPU cannot run the {request.param} path")
    default = use_isa()
    assert use_isa(request.param) == request.param
    yield built
    use_isa(default)


@pytest.fixture
def cos_sin() -> torch.Tensor:
    half = torch.arange(HEAD // 2) / (HEAD // 2)
    angles = torch.arange(512)[:, None] * (10000.0**-half)[None]  # [P, D/2]
    return torch.cat((angles.cos(), angles.sin()), dim=-1)  # float32 [P, D]


def test_norms_match_the_reference_on_strided_rows(ops):
    wide = torch.randn(5, 700) * 4
    x, res, w = wide[:, 3:579], torch.randn(5, 576), torch.rand(576)  # x: a column slice
    torch.testing.assert_close(ops["rms_norm"](x, w, 1e-5), reference.rms_norm(x, w, 1e-5))
    ours, theirs = ops["fused_add_rms_norm"](x, res, w, 1e-5), reference.fused_add_rms_norm(x, res, w, 1e-5)
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=0)  # the sum is one exact float add


def test_silu_and_mul_matches_the_reference_without_overflow(ops):
    x = torch.randn(4, 2 * 96) * 30  # |gate| up to ~100: exp would overflow a naive sigmoid
    x[0, :8] = torch.tensor([-200.0, -88.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 200.0])
    out = ops["silu_and_mul"](x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference.silu_and_mul(x), rtol=1e-6, atol=1e-6)


def test_rotary_matches_the_reference_on_split_qkv(ops, cos_sin):
    qkv = torch.randn(4, (9 + 3 + 3) * HEAD)
    q, k, _ = qkv.split([9 * HEAD, 3 * HEAD, 3 * HEAD], dim=-1)  # strided views, as the model passes them
    positions = torch.tensor([0, 3, 100, 511])
    before = qkv.clone()
    ours, theirs = ops["rotary"](positions, q, k, cos_sin, HEAD), reference.rotary(positions, q, k, cos_sin, HEAD)
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])
    assert torch.equal(qkv, before)  # inputs untouched


def test_rows_never_depend_on_the_batch(ops):
    x, res, w = torch.randn(300, 576), torch.randn(300, 576), torch.rand(576)  # large enough to go parallel
    together = ops["fused_add_rms_norm"](x, res, w, 1e-6)[0]
    alone = torch.cat([ops["fused_add_rms_norm"](x[i : i + 1], res[i : i + 1], w, 1e-6)[0] for i in range(300)])
    assert torch.equal(together, alone)


def _assert_bf16_agrees(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """bf16 results: at most one bf16 step apart anywhere (float32 operation order), equal almost everywhere."""
    assert ours.dtype == theirs.dtype == torch.bfloat16 and ours.shape == theirs.shape
    diff = (ours.float() - theirs.float()).abs()
    step = theirs.float().abs() * 2.0**-7 + 1e-30  # one unit in the last place of bf16's 8-bit mantissa
    assert bool((diff <= step).all()), f"max difference {diff.max().item()}"
    assert (diff == 0).float().mean().item() >= 0.99


def test_bf16_norms_match_the_reference(ops):
    wide = (torch.randn(6, 700) * 4).bfloat16()
    x, res, w = wide[:, 3:579], torch.randn(6, 576).bfloat16(), torch.rand(576).bfloat16()
    _assert_bf16_agrees(ops["rms_norm"](x, w, 1e-5), reference.rms_norm(x, w, 1e-5))
    ours, theirs = ops["fused_add_rms_norm"](x, res, w, 1e-5), reference.fused_add_rms_norm(x, res, w, 1e-5)
    _assert_bf16_agrees(ours[0], theirs[0])
    assert torch.equal(ours[1], theirs[1])  # one float add, rounded once: exact


def test_bf16_silu_and_mul_and_rotary_match_the_reference(ops, cos_sin):
    x = (torch.randn(5, 2 * 1536) * 6).bfloat16()
    _assert_bf16_agrees(ops["silu_and_mul"](x), reference.silu_and_mul(x))
    qkv = torch.randn(4, (9 + 3 + 3) * HEAD).bfloat16()
    q, k, _ = qkv.split([9 * HEAD, 3 * HEAD, 3 * HEAD], dim=-1)
    positions = torch.tensor([0, 7, 200, 511])
    ours, theirs = ops["rotary"](positions, q, k, cos_sin, HEAD), reference.rotary(positions, q, k, cos_sin, HEAD)
    _assert_bf16_agrees(ours[0], theirs[0])
    _assert_bf16_agrees(ours[1], theirs[1])


def test_bf16_ops_are_native_not_the_fallback():
    def refuse(*args):
        raise AssertionError("the fallback ran")

    native = layer_ops({name: refuse for name in REFERENCES})
    x, w = torch.randn(3, 64).bfloat16(), torch.rand(64).bfloat16()
    assert native["rms_norm"](x, w, 1e-5).dtype == torch.bfloat16
    assert native["silu_and_mul"](x).dtype == torch.bfloat16


def test_other_dtypes_and_odd_sizes_take_the_fallback(ops, cos_sin):
    x, w = torch.randn(3, 576, dtype=torch.float16), torch.rand(576, dtype=torch.float16)
    torch.testing.assert_close(ops["rms_norm"](x, w, 1e-5), reference.rms_norm(x, w, 1e-5))
    mixed = torch.rand(576)  # a float32 weight under bf16 rows: not one dtype, so the fallback
    xb = x.bfloat16()
    torch.testing.assert_close(ops["rms_norm"](xb, mixed, 1e-5), reference.rms_norm(xb, mixed, 1e-5))
    odd = torch.randn(3, 2 * 12)  # I = 12: not a whole number of 8-float vectors
    torch.testing.assert_close(ops["silu_and_mul"](odd), reference.silu_and_mul(odd))
    q, k = torch.randn(2, HEAD, dtype=torch.float16), torch.randn(2, HEAD, dtype=torch.float16)
    positions = torch.tensor([1, 2])
    torch.testing.assert_close(ops["rotary"](positions, q, k, cos_sin, HEAD)[0],
                               reference.rotary(positions, q, k, cos_sin, HEAD)[0])


def test_switching_native_off_leaves_the_torch_ops(monkeypatch):
    monkeypatch.setenv(native_build.ENV_DISABLE, "0")
    assert layer_ops(REFERENCES) == {}


def test_the_cpu_platform_serves_the_native_ops():
    plugins = load_plugins()
    overrides = plugins.op_overrides(plugins.select("cpu"))
    assert {"rms_norm", "fused_add_rms_norm", "rotary", "silu_and_mul"} <= overrides.keys()
    assert overrides["silu_and_mul"].__qualname__ == "LayerOps.silu_and_mul"


def test_the_paths_agree_at_model_widths(ops):
    """A prefill-wide bf16 and float32 step's ops, with row sizes off the 16-lane vectors (tails), agree
    with the generic path: sums exactly, the rest within one bf16 step (float32 summation order)."""
    path = use_isa()
    for dtype in (torch.float32, torch.bfloat16):
        for hidden in (576, 72):  # 72: a masked tail of 8 on the 16-lane path
            x, res, w = (torch.randn(300, hidden) * 3).to(dtype), torch.randn(300, hidden).to(dtype), torch.rand(hidden).to(dtype)
            gate_up = (torch.randn(300, 2 * (hidden + 8)) * 5).to(dtype)
            qkv = torch.randn(300, 15 * 8).to(dtype)
            positions = torch.randint(0, 512, (300,))
            half = torch.arange(4) / 4
            angles = torch.arange(512)[:, None] * (10000.0**-half)[None]
            cos_sin = torch.cat((angles.cos(), angles.sin()), dim=-1)
            runs = {}
            for isa in ("generic", path):
                use_isa(isa)
                normed, summed = ops["fused_add_rms_norm"](x, res, w, 1e-5)
                runs[isa] = (normed, summed, ops["silu_and_mul"](gate_up),
                             *ops["rotary"](positions, qkv[:, : 9 * 8], qkv[:, 9 * 8 : 12 * 8], cos_sin, 8))
            assert torch.equal(runs["generic"][1], runs[path][1])
            for ours, theirs in zip(runs[path], runs["generic"]):
                torch.testing.assert_close(ours.float(), theirs.float(), rtol=2.0**-7, atol=1e-6)
    use_isa(path)
