"""The kit's op, sampling and linear-method checks pass the core's references and fail broken versions.

The kit's test functions are called directly, with a stand-in platform and the host as device, on
overrides written here: the reference itself (must pass) and a broken variant (must fail).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from tokenmill.ops import reference
from tokenmill.testing import test_linear_methods, test_ops
from tokenmill.testing.test_linear_methods import exact_int4_weight, exact_int8_weight

HOST = SimpleNamespace(device=torch.device("cpu"))


def _platform(static: bool) -> SimpleNamespace:
    return SimpleNamespace(name="stand-in", static_shapes=static)


@pytest.mark.parametrize("static", [False, True])
def test_the_reference_sample_op_passes(static):
    ops = {"sample": reference.sample}
    test_ops.test_sample_greedy_rows_equal_the_reference(ops, _platform(static), HOST)
    test_ops.test_sample_draws_only_allowed_tokens_and_follows_seeds(ops, _platform(static), HOST)


def _first_token(sampler, logits, rows):
    out = reference.sample(sampler, logits, rows)
    out.token_ids = torch.zeros_like(out.token_ids)
    return out


def _unseeded(sampler, logits, rows):
    unseeded = [dataclasses.replace(r, generator=None, output_token_ids=[], prompt_token_ids=[]) for r in rows]
    return reference.sample(sampler, logits, unseeded)


def test_a_sample_op_drawing_disallowed_tokens_fails():
    with pytest.raises(AssertionError, match="outside its allowed set|the reference chooses"):
        test_ops.test_sample_draws_only_allowed_tokens_and_follows_seeds({"sample": _first_token}, _platform(False), HOST)
    with pytest.raises(AssertionError, match="the reference chooses"):
        test_ops.test_sample_greedy_rows_equal_the_reference({"sample": _first_token}, _platform(False), HOST)


def test_a_sample_op_ignoring_seeds_fails():
    with pytest.raises(AssertionError, match="the same seeds drew"):
        test_ops.test_sample_draws_only_allowed_tokens_and_follows_seeds({"sample": _unseeded}, _platform(False), HOST)


def test_argmax_and_top_k_top_p_checks_fail_broken_ops():
    test_ops.test_argmax_equals_the_reference({"argmax": reference.argmax}, _platform(False), HOST)
    with pytest.raises(AssertionError):  # the last index of a tie instead of the first
        test_ops.test_argmax_equals_the_reference(
            {"argmax": lambda x: x.shape[-1] - 1 - x.flip(-1).argmax(-1)}, _platform(False), HOST)
    off_by_one = lambda x, k, p: reference.top_k_top_p(x, None if k is None else k + 1, p)  # noqa: E731
    with pytest.raises(AssertionError, match="masks differently"):
        test_ops.test_top_k_top_p_masks_the_references_entries({"top_k_top_p": off_by_one}, _platform(False), HOST, "top_k")


def test_an_rms_norm_with_the_wrong_eps_fails():
    wrong = lambda x, w, eps: reference.rms_norm(x, w, 1e-1)  # noqa: E731
    with pytest.raises(AssertionError):
        test_ops.test_rms_norm(op_overrides={"rms_norm": wrong}, tokenmill_platform=_platform(False),
                               kv_allocator=HOST, dtype=torch.float32)


def _on_grid(values: torch.Tensor) -> bool:
    return torch.equal(values, values.round())


def test_exact_weights_sit_on_the_schemes_grid():
    """int4: each group of 32 spans 16 even levels min..max; int8: each group is absmax/127 times integers.
    Both are exact in bfloat16 and float16, so packing from any model dtype loses nothing."""
    gen = torch.Generator().manual_seed(1)
    int4, int8 = exact_int4_weight(48, 256, gen), exact_int8_weight(48, 256, gen)
    for weight in (int4, int8):
        assert torch.equal(weight.to(torch.bfloat16).float(), weight) and torch.equal(weight.half().float(), weight)
    for group in int4.view(-1, 32):
        low, high = group.min(), group.max()
        assert _on_grid((group - low) / ((high - low) / 15))
    for group in int8.view(-1, 32):
        assert _on_grid(group / (group.abs().max() / 127))


class _DenseMethod:
    """A 'linear method' that keeps the weight dense: what the kit must accept."""

    def __init__(self, scheme: str, lossy: bool = False) -> None:
        self.scheme, self.lossy = scheme, lossy

    def pack(self, weight):
        return (weight * 1.03) if self.lossy else weight  # lossy: a 3% scale error, as a wrong grid gives

    def apply(self, packed, x):
        return x @ packed.T


class _Manager:
    def __init__(self, method) -> None:
        self.method = method

    def linear_method(self, platform, scheme):
        self.method.scheme = scheme
        return self.method


@pytest.mark.parametrize("scheme", ["int4", "int8"])
def test_linear_check_accepts_exact_and_rejects_lossy_methods(scheme):
    args = dict(tokenmill_platform=_platform(False), kv_allocator=HOST, dtype=torch.float32, scheme=scheme)
    test_linear_methods.test_linear_method_matches_the_dense_layer(tokenmill_manager=_Manager(_DenseMethod(scheme)), **args)
    with pytest.raises(AssertionError, match="exceeds"):
        test_linear_methods.test_linear_method_matches_the_dense_layer(
            tokenmill_manager=_Manager(_DenseMethod(scheme, lossy=True)), **args)


def test_the_token_bitmask_check_passes_the_reference_and_fails_a_shifted_mask():
    from tokenmill.structured.token_mask import apply_token_bitmask

    test_ops.test_apply_token_bitmask_masks_the_references_entries(
        {"apply_token_bitmask": apply_token_bitmask}, _platform(False), HOST, 1000)

    def shifted(logits, bitmask, rows):  # reads each row's bits one token off
        apply_token_bitmask(logits, bitmask.roll(1, dims=1), rows)

    with pytest.raises(AssertionError, match="masks differently"):
        test_ops.test_apply_token_bitmask_masks_the_references_entries(
            {"apply_token_bitmask": shifted}, _platform(False), HOST, 1000)
