"""Conformance: each linear method the plugin offers agrees with the dense layer on weights it represents exactly.

The weights are built on the scheme's own grid (interfaces.LinearMethod): every int4 group of 32
inputs spans q = 0..15 with a power-of-two scale and offset, every int8 row has q = +-127 with a
power-of-two scale, so packing loses nothing in any dtype and only the activations may be
rounded (tolerances.LINEAR). Schemes the platform declines (None) are skipped.
"""

from __future__ import annotations

import pytest
import torch

from tokenmill.interfaces import LinearMethod
from tokenmill.testing.tolerances import LINEAR

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
