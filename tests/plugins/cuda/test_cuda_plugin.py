"""The CUDA plugin as discovered through its entry point; on a host without a GPU it must explain itself."""

from __future__ import annotations

import pytest
import torch

import tokenmill_cuda
from tokenmill.interfaces import CONTRACT_VERSION, Platform
from tokenmill.plugin_manager import load_plugins
from tokenmill_cuda.graph_runner import CudaGraphRunner, default_capture_sizes


@pytest.fixture(scope="module")
def record():
    manager = load_plugins()
    assert "cuda" in manager.records, "the tokenmill.plugins entry point `cuda` must be installed"
    return manager.records["cuda"]


def test_platform_describes_itself(record):
    platform = record.platform
    assert record.load_error is None
    assert isinstance(platform, Platform)
    assert (platform.name, platform.device_type, platform.priority) == ("cuda", "cuda", 100)
    assert (platform.dist_backend, platform.graph_capture, platform.static_shapes) == ("nccl", "cuda_graphs", False)
    assert platform.contract_version == CONTRACT_VERSION
    assert set(platform.supported_dtypes) <= {"float32", "bfloat16", "float16"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a host without CUDA")
def test_unavailable_without_a_gpu_says_why(record):
    availability = record.availability
    assert not availability.available
    assert "CUDA" in availability.reason or "cuda" in availability.reason


@pytest.mark.gpu
def test_available_with_a_gpu_names_it(record):
    assert record.availability.available, record.availability.reason
    assert torch.cuda.get_device_name(0) in record.availability.reason


def test_only_the_cuda_plugin_answers_for_cuda():
    """Contract 2: cuda's hooks have no name guards, and the manager routes cuda's calls to cuda alone."""
    manager = load_plugins()
    cuda = manager.records["cuda"].platform
    for hook in ("tokenmill_attention_backend", "tokenmill_kv_allocator", "tokenmill_step_runner"):
        assert [impl.plugin for impl in manager.hook(cuda, hook).get_hookimpls()] == [tokenmill_cuda], hook


def test_capture_sizes_cover_every_batch_up_to_max():
    sizes = default_capture_sizes(100)
    assert sizes[0] == 1 and sizes[-1] == 100 and sizes == sorted(set(sizes))
    assert len(sizes) < 25, "capture must take seconds: keep the number of graphs small"


def test_enforce_eager_returns_the_step_itself():
    def step(input_ids, positions, metadata):
        return input_ids

    assert CudaGraphRunner({"enforce_eager": True}).wrap(step) is step
    assert CudaGraphRunner({"max_num_seqs": 8}).wrap(step) is not step


def test_gemv_capture_routes_only_small_16_bit_linears(monkeypatch):
    from tokenmill_cuda import gemv_capture

    calls = []
    monkeypatch.setattr(gemv_capture, "gemv", lambda x, w, b=None: calls.append(x.shape[0]) or torch.nn.functional.linear(x, w, b))
    lin = torch.nn.Linear(8, 4).to(torch.bfloat16)
    with torch.inference_mode(), gemv_capture.GemvCapture(max_rows=2):
        lin(torch.randn(2, 8, dtype=torch.bfloat16))  # routed
        lin(torch.randn(3, 8, dtype=torch.bfloat16))  # too many rows
        lin.float()(torch.randn(1, 8))  # float32 stays with the library
    assert calls == [2]


def test_no_scheduler_suggestion_without_a_usable_gpu():
    from tokenmill_cuda.platform import make_platform

    platform = make_platform()
    if not platform.is_available().available:
        assert platform.scheduler_defaults == {}
    else:  # on a GPU machine: the larger limits exactly on cards of 70 GiB or more
        import torch

        large = torch.cuda.get_device_properties(0).total_memory >= 70 << 30
        assert platform.scheduler_defaults == ({"max_num_seqs": 512, "max_num_batched_tokens": 8192} if large else {})
