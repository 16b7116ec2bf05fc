"""Conformance: each linear method the plugin offers agrees with the dense layer on weights it represents exactly.

The weights are built on the scheme's own grid (interfaces.LinearMethod): every int4 group of 32
inputs spans q = 0..15 with a power-of-two scale and offset, every int8 row has q = +-127 with a
power-of-two scale, so packing loses nothing in any dtype and only the activations may be
rounded (tolerances.LINEAR). Schemes the platform declines (None) are skipped.
"""

from __future__ import annotations

import pytest
import torch

from tokenmill.interfaces import LinearMethod, StoredFp8, StoredInt4
from tokenmill.testing.tolerances import FP8_LINEAR, LINEAR

GROUP = 32
SHAPES = [(96, 256), (64, 576)]  # (N outputs, K inputs); K a multiple of the int4 group
ROWS = [1, 5, 64]  # decode, a small batch, a prefill chunk


def exact_int4_weight(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """float32 [N, K] = q * scale + offset per group of 32 inputs; each group holds q = 0 and q = 15."""
    groups = cols // GROUP
    q = torch.randint(0, 16, (rows, groups, GROUP), generator=gen)
    q[..., 0], q[..., 1] = 0, 15  # the group's min and max sit on the grid's ends
    q = q.gather(2, torch.argsort(torch.rand(rows, groups, GROUP, generator=gen), dim=2))  # anywhere in the group
    scale = 2.0 ** -torch.randint(3, 7, (rows, groups, 1), generator=gen).float()
    offset = -torch.randint(0, 11, (rows, groups, 1), generator=gen).float() * scale
    return (q * scale + offset).view(rows, cols)


def exact_int8_weight(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """float32 [N, K] = q * scale per row, q in -127..127; every group of 32 holds +-127."""
    q = torch.randint(-127, 128, (rows, cols // GROUP, GROUP), generator=gen)
    q[..., 0] = 127 * (1 - 2 * torch.randint(0, 2, q.shape[:2], generator=gen))  # the absmax of each group
    scale = 2.0 ** -torch.randint(5, 9, (rows, 1, 1), generator=gen).float()
    return (q * scale).view(rows, cols)


EXACT_WEIGHTS = {"int4": exact_int4_weight, "int8": exact_int8_weight}


@pytest.mark.parametrize("scheme", list(EXACT_WEIGHTS))
def test_linear_method_matches_the_dense_layer(tokenmill_manager, tokenmill_platform, kv_allocator, dtype, scheme):
    """pack once, then apply x [T, K] -> x @ W^T [T, N] in the model dtype, for decode and prefill sizes."""
    method = tokenmill_manager.linear_method(tokenmill_platform, scheme)
    if method is None:
        pytest.skip(f"{tokenmill_platform.name} has no {scheme} kernel (tokenmill_linear_method returned None); "
                    f"the core keeps those layers dense")
    assert isinstance(method, LinearMethod) and method.scheme == scheme, f"{method!r} for {scheme!r}"
    gen, device = torch.Generator().manual_seed(0), kv_allocator.device
    for rows, cols in SHAPES:
        weight = EXACT_WEIGHTS[scheme](rows, cols, gen)  # [N, K], exact in every dtype
        packed = method.pack(weight.to(device=device, dtype=dtype))
        for num_rows in ROWS:
            x = torch.randn(num_rows, cols, generator=gen).to(dtype)  # [T, K]
            got = method.apply(packed, x.to(device))
            want = x.double() @ weight.double().T  # [T, N]
            assert got.shape == want.shape and got.dtype == dtype and got.device.type == device.type, (
                f"{scheme} apply gave {tuple(got.shape)} {got.dtype} on {got.device}, expected "
                f"{tuple(want.shape)} {dtype} on {device.type}")
            error = (got.double().cpu() - want).abs().max().item()
            bound = LINEAR[dtype] * want.abs().max().item()
            assert error <= bound, (f"{scheme} [{num_rows}x{cols}] @ [{cols}x{rows}]^T in {dtype}: max error "
                                    f"{error:.3g} exceeds {LINEAR[dtype]} x max |output| = {bound:.3g}")


def _stored_int4(rows: int, cols: int, group: int, gen: torch.Generator) -> tuple[StoredInt4, torch.Tensor]:
    """A GPTQ/AWQ-style weight: random codes, power-of-two scales, integer zero points; and its float32 [N, K]."""
    codes = torch.randint(0, 16, (rows, cols), generator=gen).to(torch.uint8)
    scales = 2.0 ** -torch.randint(3, 7, (rows, cols // group), generator=gen).float()
    zeros = torch.randint(0, 16, (rows, cols // group), generator=gen).float()
    q = codes.float().view(rows, cols // group, group)
    return StoredInt4(codes, scales, zeros, group), ((q - zeros[..., None]) * scales[..., None]).view(rows, cols)


def _stored_fp8(rows: int, cols: int, per_channel: bool, gen: torch.Generator) -> tuple[StoredFp8, torch.Tensor]:
    """e4m3 codes of random weights with a power-of-two scale per row (or one); and the float32 [N, K] they are."""
    codes = (torch.randn(rows, cols, generator=gen) * 64).to(torch.float8_e4m3fn)
    scale = 2.0 ** -torch.randint(6, 9, (rows if per_channel else 1,), generator=gen).float()
    return StoredFp8(codes, scale), codes.float() * scale[:, None]


STORED = {"int4_groups": [("g32", lambda n, k, g: _stored_int4(n, k, 32, g)), ("g128", lambda n, k, g: _stored_int4(n, k, 128, g)),
                          ("per-row", lambda n, k, g: _stored_int4(n, k, k, g))],
          "fp8": [("per-tensor", lambda n, k, g: _stored_fp8(n, k, False, g)),
                  ("per-channel", lambda n, k, g: _stored_fp8(n, k, True, g))]}


@pytest.mark.parametrize("scheme", list(STORED))
def test_linear_method_runs_a_checkpoints_own_codes(tokenmill_manager, tokenmill_platform, kv_allocator, dtype, scheme):
    """pack_stored(StoredInt4 / StoredFp8, dense weight) then apply, against the stored weight's exact values."""
    method = tokenmill_manager.linear_method(tokenmill_platform, scheme)
    if method is None or not hasattr(method, "pack_stored"):
        pytest.skip(f"{tokenmill_platform.name} has no {scheme} kernel; the core runs those layers dequantized")
    assert isinstance(method, LinearMethod) and method.scheme == scheme, f"{method!r} for {scheme!r}"
    gen, device = torch.Generator().manual_seed(1), kv_allocator.device
    bound_of = FP8_LINEAR if scheme == "fp8" else LINEAR[dtype]
    for label, make in STORED[scheme]:
        stored, weight = make(128, 256, gen)  # [N, K], exact in float32
        on_device = type(stored)(*(t.to(device) if isinstance(t, torch.Tensor) else t
                                   for t in (getattr(stored, f) for f in stored.__slots__)))
        packed = method.pack_stored(on_device, weight.to(device=device, dtype=dtype))
        assert packed is not None, f"{scheme} {label}: pack_stored declined a layout the scheme defines"
        for num_rows in ROWS:
            x = torch.randn(num_rows, 256, generator=gen).to(dtype)
            got = method.apply(packed, x.to(device))
            want = x.double() @ weight.double().T
            assert got.shape == want.shape and got.dtype == dtype, f"{scheme} {label}: {got.shape} {got.dtype}"
            error = (got.double().cpu() - want).abs().max().item()
            bound = bound_of * want.abs().max().item()
            assert error <= bound, (f"{scheme} {label} [{num_rows}x256] in {dtype}: max error {error:.3g} exceeds "
                                    f"{bound_of} x max |output| = {bound:.3g}")
