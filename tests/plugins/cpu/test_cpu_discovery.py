"""The CPU plugin is found through the `tokenmill.plugins` entry point, and only it answers for "cpu"."""

from __future__ import annotations

from importlib.metadata import entry_points

import torch

import tokenmill_cpu
from tokenmill.hookspecs import ENTRY_POINT_GROUP
from tokenmill.interfaces import CONTRACT_VERSION, AttentionSpec
from tokenmill.plugin_manager import PluginManager


def test_entry_point_names_the_package():
    (ep,) = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "cpu"]
    assert ep.value == "tokenmill_cpu"
    assert ep.dist is not None and ep.dist.name == "tokenmill-cpu"
    assert ep.load() is tokenmill_cpu


def test_manager_loads_and_selects_cpu(monkeypatch):
    monkeypatch.setenv("TOKENMILL_PLUGINS", "cpu")
    monkeypatch.delenv("TOKENMILL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    manager = PluginManager()
    manager.load_entry_points()
    record = manager.records["cpu"]
    assert record.distribution == "tokenmill-cpu" and record.load_error is None
    platform = manager.select("cpu")
    assert (platform.name, platform.device_type, platform.priority) == ("cpu", "cpu", 10)
    assert (platform.dist_backend, platform.static_shapes, platform.graph_capture) == ("gloo", False, None)
    assert platform.contract_version == CONTRACT_VERSION
    assert set(platform.supported_dtypes) == {"float32", "bfloat16", "float16"}
    assert platform.is_available().available


def test_only_the_cpu_plugin_answers_for_cpu(monkeypatch):
    """Every installed plugin is loaded, but cpu's hooks reach the cpu module alone (no guards needed)."""
    monkeypatch.delenv("TOKENMILL_PLUGINS", raising=False)
    monkeypatch.delenv("TOKENMILL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    manager = PluginManager()
    manager.load_entry_points()
    assert len(manager.records) > 1, "this test needs another plugin installed beside cpu (the toy)"
    cpu = manager.select("cpu")
    for hook in ("tokenmill_attention_backend", "tokenmill_kv_allocator", "tokenmill_op_overrides"):
        impls = manager.hook(cpu, hook).get_hookimpls()
        assert [impl.plugin for impl in impls] == [tokenmill_cpu], hook


def test_hooks_supply_pieces_for_cpu():
    cpu = tokenmill_cpu.tokenmill_platform()
    backend = tokenmill_cpu.tokenmill_attention_backend(platform=cpu, spec=AttentionSpec(4, 2, 64, 16, torch.float32))
    assert backend.kv_cache_shape(7) == (2, 7, 16, 2, 64)
    assert tokenmill_cpu.tokenmill_kv_allocator(platform=cpu, device_index=0).device == torch.device("cpu")
