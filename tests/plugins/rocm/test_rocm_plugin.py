"""The ROCm plugin: detection on a simulated HIP build of torch, and the shared Triton kernels with its AMD tiles.

The kernels run under TRITON_INTERPRET=1 (tests/conftest.py sets it without a GPU) at small sizes
and are compared with the float64 reference of the Triton tests.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "triton"))  # triton_reference, shared with those tests

from tokenmill.interfaces import AttentionSpec  # noqa: E402
from triton_reference import attention_reference, make_case, rel_error, write_reference  # noqa: E402

from tokenmill_rocm import platform as rocm_platform  # noqa: E402
from tokenmill_rocm.tiles import WAVEFRONT_SIZE, rocm_tiles  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1.5e-2}


def _simulate_hip(monkeypatch, gpus: int = 1) -> None:
    """Make this torch look like a ROCm 6.2 build with `gpus` MI300X cards."""
    monkeypatch.setattr(torch.version, "hip", "6.2.41133-dd7f95766", raising=False)
    monkeypatch.setattr(torch.version, "cuda", None, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "AMD Instinct MI300X")
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index=0: SimpleNamespace(gcnArchName="gfx942:sramecc+:xnack-", multi_processor_count=304))


def test_a_cpu_build_of_torch_is_refused_with_the_reason():
    availability = rocm_platform.make_platform().is_available()
    assert not availability.available and "torch.version.hip is None" in availability.reason


def test_a_simulated_hip_build_with_a_gpu_is_detected(monkeypatch):
    _simulate_hip(monkeypatch)
    availability = rocm_platform.make_platform().is_available()
    assert availability.available, availability.reason
    assert availability.reason == "1 x AMD Instinct MI300X (gfx942:sramecc+:xnack-), ROCm 6.2.41133-dd7f95766"


def test_a_hip_build_without_a_gpu_says_so(monkeypatch):
    _simulate_hip(monkeypatch, gpus=0)
    availability = rocm_platform.make_platform().is_available()
    assert not availability.available and "built for ROCm 6.2" in availability.reason and "/dev/kfd" in availability.reason


def test_the_cuda_plugin_hands_a_hip_build_to_rocm(monkeypatch):
    _simulate_hip(monkeypatch)
    from tokenmill_cuda.platform import probe

    availability, _ = probe()
    assert not availability.available and "use the rocm plugin" in availability.reason


def test_amd_tiles_use_wavefront_64_choices():
    small, large = rocm_tiles(128, 304), rocm_tiles(256, 304)
    assert WAVEFRONT_SIZE == 64 and small.num_sms == 304
    assert (small.prefill.block_m, small.prefill.block_n, small.decode.num_stages) == (128, 64, 1)
    assert (large.prefill.block_m, large.prefill.block_n, large.decode.block_n) == (64, 32, 32)
    assert small.prefill.launch == {}, "under the interpreter no HIP-only launch option is passed"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("query_lens, seq_lens, head_size", [
    ([1, 1, 1], [40, 7, 130], 64),  # pure decode, context splits
    ([100, 1, 3], [150, 33, 20], 64),  # a prefill longer than CUDA's 64-row tile, within ROCm's 128
    ([20, 1], [52, 9], 256),  # the large-head tiles
])
def test_shared_kernels_with_rocm_tiles_match_the_reference(query_lens, seq_lens, head_size, dtype):
    from tokenmill_triton.backend import TritonAttentionBackend

    device = torch.device("cpu")
    case = make_case(query_lens, seq_lens, 4, 2, head_size, 16, dtype, device, 0)
    tiles = rocm_tiles(head_size, 4)
    backend = TritonAttentionBackend(AttentionSpec(4, 2, head_size, 16, dtype), device, tiles=tiles)
    assert backend.shape.block_n == tiles.decode.block_n
    metadata = backend.build_metadata(case.batch)
    expected_cache = write_reference(case)
    ref = attention_reference(case, expected_cache, head_size**-0.5)
    out = backend.forward(case.query, case.key, case.value, case.kv_cache, metadata, head_size**-0.5)
    assert torch.equal(case.kv_cache, expected_cache)
    assert rel_error(out, ref) < TOLERANCE[dtype]
