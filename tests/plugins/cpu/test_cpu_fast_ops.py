"""The CPU plugin's fewer-op overrides against the core's reference ops."""

from __future__ import annotations

import pytest
import torch

from tokenmill.ops import reference
from tokenmill.plugin_manager import load_plugins
from tokenmill_cpu.fast_ops import Rotary, fused_add_rms_norm, rms_norm

HEAD = 64


@pytest.fixture
def cos_sin() -> torch.Tensor:
    half = torch.arange(HEAD // 2) / (HEAD // 2)
    angles = torch.arange(512)[:, None] * (10000.0 ** -half)[None]  # [P, D/2]
    return torch.cat((angles.cos(), angles.sin()), dim=-1)  # float32 [P, D]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norms_match_the_reference(dtype):
    x, res, w = torch.randn(7, 576, dtype=dtype), torch.randn(7, 576, dtype=dtype), torch.rand(576, dtype=dtype)
    torch.testing.assert_close(rms_norm(x, w, 1e-5), reference.rms_norm(x, w, 1e-5))
    ours, theirs = fused_add_rms_norm(x, res, w, 1e-5), reference.fused_add_rms_norm(x, res, w, 1e-5)
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_matches_the_reference(cos_sin, dtype):
    rotary = Rotary()
    positions = torch.tensor([0, 3, 100, 511])
    q, k = torch.randn(4, 9 * HEAD, dtype=dtype), torch.randn(4, 3 * HEAD, dtype=dtype)
    for _ in range(2):  # the second call reuses the step's tables
        ours, theirs = rotary(positions, q, k, cos_sin, HEAD), reference.rotary(positions, q, k, cos_sin, HEAD)
        torch.testing.assert_close(ours[0], theirs[0])
        torch.testing.assert_close(ours[1], theirs[1])


def test_rotary_notices_new_or_rewritten_positions(cos_sin):
    rotary = Rotary()
    q, k = torch.randn(2, HEAD), torch.randn(2, HEAD)
    positions = torch.tensor([1, 2])
    rotary(positions, q, k, cos_sin, HEAD)
    positions.copy_(torch.tensor([7, 9]))  # rewritten in place
    torch.testing.assert_close(rotary(positions, q, k, cos_sin, HEAD)[0], reference.rotary(positions, q, k, cos_sin, HEAD)[0])
    other = torch.tensor([30, 40])  # a new step
    torch.testing.assert_close(rotary(other, q, k, cos_sin, HEAD)[1], reference.rotary(other, q, k, cos_sin, HEAD)[1])


def test_rotary_runs_under_inference_mode(cos_sin):
    rotary = Rotary()
    with torch.inference_mode():
        positions, q, k = torch.tensor([4, 5]), torch.randn(2, HEAD), torch.randn(2, HEAD)
        for _ in range(2):
            torch.testing.assert_close(rotary(positions, q, k, cos_sin, HEAD)[0],
                                       reference.rotary(positions, q, k, cos_sin, HEAD)[0])


def test_the_cpu_platform_registers_the_overrides():
    plugins = load_plugins()
    overrides = plugins.op_overrides(plugins.select("cpu"))
    assert {"rms_norm", "fused_add_rms_norm", "rotary"} <= overrides.keys()
