"""intel_extension_for_pytorch is optional: absent or mismatched means the plugin's own ops, matched means IPEX's."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

import tokenmill_cpu
from tokenmill.ops import OpRegistry, reference
from tokenmill_cpu import ipex, native_build
from tokenmill_cpu.fast_ops import fast_ops
from tokenmill_cpu.fast_ops import rms_norm as fast_rms_norm


@pytest.fixture()
def fresh_probe():
    """Forget the cached probe before and after, so each test sees its own sys.modules."""
    ipex._load.cache_clear()
    yield
    ipex._load.cache_clear()


def test_absent_ipex_means_the_plugins_own_ops(monkeypatch, fresh_probe):
    monkeypatch.setitem(sys.modules, ipex.MODULE_NAME, None)  # makes the import raise ImportError
    assert ipex.ipex_version() is None and ipex.ipex_ops() == {}
    platform = tokenmill_cpu.tokenmill_platform()
    assert platform.ipex_version is None and platform.is_available().available
    overrides = tokenmill_cpu.tokenmill_op_overrides(platform=platform).ops
    assert overrides.keys() == {*fast_ops(), "silu_and_mul", "argmax", "fused_moe"}
    assert all(op.__module__.startswith("tokenmill_cpu.") for op in overrides.values() if op is not reference.silu_and_mul)
    assert overrides["rms_norm"].__qualname__ == "LayerOps.rms_norm"  # the native op (CI has g++)


def test_without_native_ops_the_torch_versions_serve(monkeypatch, fresh_probe):
    monkeypatch.setitem(sys.modules, ipex.MODULE_NAME, None)
    monkeypatch.setenv(native_build.ENV_DISABLE, "0")
    overrides = tokenmill_cpu.tokenmill_op_overrides(platform=tokenmill_cpu.tokenmill_platform()).ops
    assert overrides["rms_norm"] is fast_rms_norm and overrides["silu_and_mul"] is reference.silu_and_mul


def test_ipex_built_for_another_torch_is_ignored(monkeypatch, fresh_probe):
    monkeypatch.setitem(sys.modules, ipex.MODULE_NAME, SimpleNamespace(__version__="1.13.100+cpu"))
    assert ipex.ipex_version() is None and ipex.ipex_ops() == {}


def test_matching_ipex_supplies_rms_norm(monkeypatch, fresh_probe):
    calls = []

    def rms_norm(x, weight, eps):
        calls.append(eps)
        return x * weight

    major_minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    fake = SimpleNamespace(__version__=f"{major_minor}.0+cpu", llm=SimpleNamespace(functional=SimpleNamespace(rms_norm=rms_norm)))
    monkeypatch.setitem(sys.modules, ipex.MODULE_NAME, fake)
    platform = tokenmill_cpu.tokenmill_platform()
    assert platform.ipex_version == f"{major_minor}.0+cpu"
    overrides = tokenmill_cpu.tokenmill_op_overrides(platform=platform)
    registry = OpRegistry(overrides.ops)  # refuses names outside OP_NAMES
    registry.rms_norm(torch.ones(2, 4), torch.ones(4), 1e-6)
    assert calls == [1e-6]
