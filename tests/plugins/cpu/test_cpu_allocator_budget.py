"""The CPU allocator's RAM budget: the default share, refusals that name both numbers, lazy zeroed pools."""

from __future__ import annotations

import pytest
import torch

from tokenmill.errors import TokenmillError
from tokenmill_cpu.allocator import GiB, CpuKVAllocator, KVBudgetError, available_ram_bytes, lazy_zeros


def _meminfo(tmp_path, available_kib: int) -> str:
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       99999999 kB\nMemFree:         1234 kB\nMemAvailable:   {available_kib} kB\n")
    return str(path)


def test_reads_mem_available(tmp_path):
    assert available_ram_bytes(_meminfo(tmp_path, 1024)) == 1024 * 1024


def test_falls_back_to_sysconf_without_meminfo(tmp_path):
    assert available_ram_bytes(str(tmp_path / "missing")) > 0


@pytest.mark.parametrize(("available_gib", "expected_gib"), [(8, 2), (16, 4), (64, 4)])
def test_default_is_a_quarter_of_available_ram_capped_at_4_gib(tmp_path, available_gib, expected_gib):
    allocator = CpuKVAllocator(_meminfo(tmp_path, available_gib * 1024 * 1024))
    assert allocator.available_kv_bytes(None) == expected_gib * GiB


def test_request_that_fits_is_granted_as_asked(tmp_path):
    assert CpuKVAllocator(_meminfo(tmp_path, 8 * 1024 * 1024)).available_kv_bytes(6 * GiB) == 6 * GiB


def test_request_too_large_names_both_amounts_and_the_fix(tmp_path):
    allocator = CpuKVAllocator(_meminfo(tmp_path, 2 * 1024 * 1024))
    with pytest.raises(KVBudgetError) as info:
        allocator.available_kv_bytes(3 * GiB)
    message = str(info.value)
    assert "3.00 GiB" in message and "2.00 GiB" in message and "--kv-cache-memory" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, TokenmillError)


def test_non_positive_request_is_refused(tmp_path):
    with pytest.raises(KVBudgetError, match="positive"):
        CpuKVAllocator(_meminfo(tmp_path, 1024 * 1024)).available_kv_bytes(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lazy_zeros_are_zero_writable_and_independent(dtype):
    first, second = lazy_zeros((2, 3, 16, 2, 8), dtype), lazy_zeros((2, 3, 16, 2, 8), dtype)
    assert first.shape == (2, 3, 16, 2, 8) and first.dtype == dtype and first.is_contiguous()
    assert not first.any() and not second.any()
    first[1, 2] = 1.5
    assert first.sum().item() == 1.5 * 16 * 2 * 8 and not second.any()


def test_lazy_zeros_of_nothing():
    assert lazy_zeros((2, 0, 16, 2, 8), torch.float32).numel() == 0
