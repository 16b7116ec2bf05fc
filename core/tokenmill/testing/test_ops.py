"""Conformance: every op override the plugin offers agrees with tokenmill.ops.reference on its device.

Ops the plugin does not override are skipped (the core runs its reference for them). Elementwise
ops are checked over shapes drawn by hypothesis, in every supported dtype, within
tolerances.ELEMENTWISE; top_k_top_p must mask exactly the reference's entries; argmax must equal
it; "sample" must equal greedy choices and draw only tokens its row allows.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenmill.ops import OpRegistry, reference
from tokenmill.ops.registry import OP_NAMES
from tokenmill.sampling.noise import new_generator
from tokenmill.sampling.params import SamplingParams
from tokenmill.sampling.sampler import Sampler, SamplingRow
from tokenmill.testing.tolerances import ELEMENTWISE, MASKED_LOGITS

SHAPES = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
ROWS = st.integers(1, 40)  # T: decode-sized to prefill-sized, odd counts included
HIDDEN = st.sampled_from([64, 96, 256, 576])  # 576: SmolLM2-135M's hidden size


@pytest.fixture(scope="session")
def op_overrides(tokenmill_manager, tokenmill_platform) -> dict:
    """The overrides the platform's plugin offers, by op name; unknown names fail here."""
    offered = tokenmill_manager.op_overrides(tokenmill_platform)
    unknown = sorted(set(offered) - set(OP_NAMES))
    assert not unknown, f"op overrides {unknown} are not in tokenmill.ops.registry.OP_NAMES {OP_NAMES}"
    return offered


def _override(op_overrides: dict, name: str, platform):
    if name not in op_overrides:
        pytest.skip(f"{platform.name} does not override {name!r}; the core's reference runs")
    return op_overrides[name]


def _randn(gen: torch.Generator, shape, dtype, device, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=gen) * scale).to(device=device, dtype=dtype)


def _close(got, want, dtype, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)}, the reference gives {tuple(want.shape)}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, the reference gives {want.dtype}"
    torch.testing.assert_close(got.float().cpu(), want.float().cpu(), **ELEMENTWISE[dtype], msg=lambda m: f"{what}: {m}")


# ----------------------------------------------------------------------------- elementwise ops


@SHAPES
@given(rows=ROWS, hidden=HIDDEN, seed=st.integers(0, 2**16))
def test_rms_norm(op_overrides, tokenmill_platform, kv_allocator, dtype, rows, hidden, seed):
    """x [T, H], weight [H] -> [T, H] in x's dtype."""
    fn = _override(op_overrides, "rms_norm", tokenmill_platform)
    gen, device = torch.Generator().manual_seed(seed), kv_allocator.device
    x, weight = _randn(gen, (rows, hidden), dtype, device, 3.0), _randn(gen, (hidden,), dtype, device)
    _close(fn(x.clone(), weight, 1e-6), reference.rms_norm(x, weight, 1e-6), dtype, "rms_norm")


@SHAPES
@given(rows=ROWS, hidden=HIDDEN, seed=st.integers(0, 2**16))
def test_fused_add_rms_norm(op_overrides, tokenmill_platform, kv_allocator, dtype, rows, hidden, seed):
    """(x + residual) -> (its rms_norm, the sum as the new residual)."""
    fn = _override(op_overrides, "fused_add_rms_norm", tokenmill_platform)
    gen, device = torch.Generator().manual_seed(seed), kv_allocator.device
    x, residual = _randn(gen, (rows, hidden), dtype, device), _randn(gen, (rows, hidden), dtype, device, 2.0)
    weight = _randn(gen, (hidden,), dtype, device)
    got = fn(x.clone(), residual.clone(), weight, 1e-5)
    want = reference.fused_add_rms_norm(x, residual, weight, 1e-5)
    assert isinstance(got, tuple) and len(got) == 2, "fused_add_rms_norm returns (normed, new residual)"
    _close(got[0], want[0], dtype, "fused_add_rms_norm output")
    _close(got[1], want[1], dtype, "fused_add_rms_norm residual")


def _cos_sin_cache(max_pos: int, head_size: int, device) -> torch.Tensor:
    """float32 [max_pos, D]: cos of each position's angles in [:, :D/2], sin in [:, D/2:] (theta 10000)."""
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)  # [D/2]
    angles = torch.arange(max_pos, dtype=torch.float64).unsqueeze(1) * inv_freq  # [max_pos, D/2]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).float().to(device)


@SHAPES
@given(rows=ROWS, heads=st.sampled_from([(4, 4), (8, 2), (9, 3)]), head_size=st.sampled_from([64, 128]),
       seed=st.integers(0, 2**16))
def test_rotary(op_overrides, tokenmill_platform, kv_allocator, dtype, rows, heads, head_size, seed):
    """NeoX-style rotation of q [T, Hq * D] and k [T, Hkv * D] at arbitrary positions."""
    fn = _override(op_overrides, "rotary", tokenmill_platform)
    gen, device = torch.Generator().manual_seed(seed), kv_allocator.device
    cache = _cos_sin_cache(4096, head_size, device)
    positions = torch.randint(0, 4096, (rows,), generator=gen).to(device)
    query = _randn(gen, (rows, heads[0] * head_size), dtype, device)
    key = _randn(gen, (rows, heads[1] * head_size), dtype, device)
    got = fn(positions, query.clone(), key.clone(), cache, head_size)
    want = reference.rotary(positions, query, key, cache, head_size)
    _close(got[0], want[0], dtype, "rotary query")
    _close(got[1], want[1], dtype, "rotary key")


@SHAPES
@given(rows=ROWS, inner=st.sampled_from([64, 96, 1536]), seed=st.integers(0, 2**16))
def test_silu_and_mul(op_overrides, tokenmill_platform, kv_allocator, dtype, rows, inner, seed):
    """x [T, 2I] (gate, then up) -> silu(gate) * up [T, I]."""
    fn = _override(op_overrides, "silu_and_mul", tokenmill_platform)
    x = _randn(torch.Generator().manual_seed(seed), (rows, 2 * inner), dtype, kv_allocator.device, 3.0)
    _close(fn(x.clone()), reference.silu_and_mul(x), dtype, "silu_and_mul")


@SHAPES
@given(rows=ROWS, inner=st.sampled_from([64, 96, 1536]), seed=st.integers(0, 2**16))
def test_gelu_tanh_and_mul(op_overrides, tokenmill_platform, kv_allocator, dtype, rows, inner, seed):
    """x [T, 2I] (gate, then up) -> gelu_tanh(gate) * up [T, I] (Gemma's GeGLU)."""
    fn = _override(op_overrides, "gelu_tanh_and_mul", tokenmill_platform)
    x = _randn(torch.Generator().manual_seed(seed), (rows, 2 * inner), dtype, kv_allocator.device, 3.0)
    _close(fn(x.clone()), reference.gelu_tanh_and_mul(x), dtype, "gelu_tanh_and_mul")


# ----------------------------------------------------------------------------- sampling ops


def _logits(rows: int, vocab: int, device, seed: int = 0) -> torch.Tensor:
    """float32 [B, V] with spread-out, tie-free values."""
    return _randn(torch.Generator().manual_seed(seed), (rows, vocab), torch.float32, device, 4.0)


TOP_K_TOP_P_CASES = {  # name -> (top_k per row or None, top_p per row or None); 0 / >= V / 1.0 are "off"
    "top_k": ([1, 5, 0, 300, 1000, 40], None),
    "top_p": (None, [0.9, 0.5, 1.0, 0.05, 0.999, 0.7]),
    "both": ([3, 0, 50, 1000, 7, 1], [0.8, 0.3, 1.0, 0.95, 1.0, 0.6]),
    "neither": (None, None),
}


@pytest.mark.parametrize("case", list(TOP_K_TOP_P_CASES))
def test_top_k_top_p_masks_the_references_entries(op_overrides, tokenmill_platform, kv_allocator, case):
    """Masked entries (-inf) are exactly the reference's; kept entries keep their values."""
    fn = _override(op_overrides, "top_k_top_p", tokenmill_platform)
    device, (k, p) = kv_allocator.device, TOP_K_TOP_P_CASES[case]
    logits = _logits(6, 1000, device, seed=1)
    top_k = None if k is None else torch.tensor(k, dtype=torch.int64, device=device)
    top_p = None if p is None else torch.tensor(p, dtype=torch.float32, device=device)
    got = fn(logits.clone(), top_k, top_p).float().cpu()
    want = reference.top_k_top_p(logits.clone(), top_k, top_p).cpu()
    assert got.shape == want.shape
    masked, want_masked = torch.isneginf(got), torch.isneginf(want)
    bad = (masked != want_masked).nonzero().tolist()
    assert not bad, f"top_k_top_p ({case}) masks differently from the reference at [row, token] {bad[:8]}"
    torch.testing.assert_close(got[~masked], want[~want_masked], **MASKED_LOGITS)


@pytest.mark.parametrize("vocab", [1000, 1024])
def test_apply_token_bitmask_masks_the_references_entries(op_overrides, tokenmill_platform, kv_allocator, vocab):
    """In place on logits [P, V]: the listed rows lose exactly the tokens whose bit is clear; others are untouched."""
    from tokenmill.structured.token_mask import apply_token_bitmask

    fn = _override(op_overrides, "apply_token_bitmask", tokenmill_platform)
    device = kv_allocator.device
    gen = torch.Generator().manual_seed(vocab)
    logits = _logits(6, vocab, device, seed=2)
    bitmask = torch.randint(-2**31, 2**31 - 1, (6, -(-vocab // 32)), dtype=torch.int32, generator=gen).to(device)
    rows = torch.tensor([5, 0, 3], dtype=torch.int64, device=device)
    got, want = logits.clone(), logits.clone()
    fn(got, bitmask, rows)
    apply_token_bitmask(want, bitmask, rows)
    bad = (torch.isneginf(got) != torch.isneginf(want)).nonzero().tolist()
    assert not bad, f"apply_token_bitmask masks differently from the reference at [row, token] {bad[:8]}"
    kept = ~torch.isneginf(want)
    assert torch.equal(got[kept].cpu(), logits[kept].cpu()), "apply_token_bitmask changed kept logits"


def test_argmax_equals_the_reference(op_overrides, tokenmill_platform, kv_allocator):
    """int64 [B], the first index of each row's maximum, ties and -inf included."""
    fn = _override(op_overrides, "argmax", tokenmill_platform)
    device = kv_allocator.device
    for rows, vocab in ((1, 49152), (7, 260), (64, 32000)):
        logits = _logits(rows, vocab, device, seed=rows)
        logits[0, : vocab // 2] = float("-inf")
        if rows > 1:  # a tie: the first index wins
            logits[1, 10] = logits[1, vocab - 3] = logits[1].max() + 1
        got, want = fn(logits), reference.argmax(logits)
        assert got.dtype == torch.int64 and got.shape == (rows,), f"argmax gave {got.dtype} {tuple(got.shape)}"
        assert torch.equal(got.cpu(), want.cpu()), f"argmax [{rows}, {vocab}]: {got.tolist()} != {want.tolist()}"


def _rows(params: list, device) -> list:
    """SamplingRows as the engine builds them, each with its own seeded generator where it has a seed."""
    return [SamplingRow(p, [1, 2, 3], [], new_generator(p.seed, device)) for p in params]


def _sampler(ops: dict, platform) -> Sampler:
    return Sampler([0], ops=OpRegistry(ops), static=platform.static_shapes)


def test_sample_greedy_rows_equal_the_reference(op_overrides, tokenmill_platform, kv_allocator):
    """Greedy rows (with and without logprobs) choose what the core's Sampler chooses."""
    fn = _override(op_overrides, "sample", tokenmill_platform)
    device = kv_allocator.device
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.0, logprobs=2),
              SamplingParams(temperature=0.0)]
    logits = _logits(len(params) + 2, 260, device, seed=3)  # two padding rows past the real ones
    got = fn(_sampler(op_overrides, tokenmill_platform), logits.clone(), _rows(params, device))
    want = _sampler({}, tokenmill_platform).choose(logits.clone(), _rows(params, device))
    got_ids, want_ids = got.token_ids[: len(params)].tolist(), want.token_ids[: len(params)].tolist()
    assert got_ids == want_ids, f"greedy sample {got_ids}, the reference chooses {want_ids}"
    for i, (entry, ref) in enumerate(zip(got.logprobs, want.logprobs)):
        assert (entry is None) == (ref is None), f"row {i}: logprobs present {entry is not None}, expected {ref is not None}"
        if ref is not None:
            assert list(entry) == list(ref), f"row {i}: logprob tokens {list(entry)}, expected {list(ref)}"
            for token, (lp, rank) in ref.items():
                assert entry[token][1] == rank and abs(entry[token][0] - lp) <= 1e-4, (i, token, entry[token], (lp, rank))


SAMPLE_PARAMS = [  # one truncation knob per row, so the allowed set does not depend on their order
    SamplingParams(temperature=0.8, top_k=3),
    SamplingParams(temperature=1.0, top_p=0.5),
    SamplingParams(temperature=0.7, min_p=0.2),
    SamplingParams(temperature=1.3),
    SamplingParams(temperature=0.0),
]


def _allowed(logits: torch.Tensor, params: SamplingParams) -> set[int]:
    """The tokens row `params` may draw from logits [V] (float32 on the host)."""
    if params.is_greedy:
        return {int(logits.argmax())}
    x = logits / params.temperature
    if params.min_p > 0:
        x = x.masked_fill(x < x.max() + torch.tensor(params.min_p).log(), float("-inf"))
    k = torch.tensor([params.top_k]) if params.top_k > 0 else None
    p = torch.tensor([params.top_p]) if params.top_p < 1.0 else None
    x = reference.top_k_top_p(x.unsqueeze(0), k, p)[0]
    return set(torch.isfinite(x).nonzero().flatten().tolist())


def test_sample_draws_only_allowed_tokens_and_follows_seeds(op_overrides, tokenmill_platform, kv_allocator):
    """Drawn tokens stay within each row's top_k / top_p / min_p set; the same seeds draw the same tokens."""
    fn = _override(op_overrides, "sample", tokenmill_platform)
    device = kv_allocator.device
    logits = _logits(len(SAMPLE_PARAMS) + 1, 260, device, seed=4)  # one padding row
    allowed = [_allowed(logits[i].cpu(), p) for i, p in enumerate(SAMPLE_PARAMS)]
    sampler = _sampler(op_overrides, tokenmill_platform)
    for seed in range(12):
        params = [SamplingParams(**{**_fields(p), "seed": 1000 * seed + i}) for i, p in enumerate(SAMPLE_PARAMS)]
        first = fn(sampler, logits.clone(), _rows(params, device)).token_ids[: len(params)].tolist()
        again = fn(sampler, logits.clone(), _rows(params, device)).token_ids[: len(params)].tolist()
        assert first == again, f"the same seeds drew {first}, then {again}"
        for i, token in enumerate(first):
            assert token in allowed[i], f"row {i} ({SAMPLE_PARAMS[i]}) drew {token}, outside its allowed set"


def _fields(params: SamplingParams) -> dict:
    return {name: getattr(params, name) for name in ("temperature", "top_k", "top_p", "min_p")}
