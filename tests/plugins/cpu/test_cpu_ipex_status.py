"""`tokenmill plugins` says whether intel_extension_for_pytorch is in use or why not, with IPEX simulated."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from tokenmill.cli.plugins_cmd import describe_plugins, format_table
from tokenmill.plugin_manager import load_plugins
from tokenmill_cpu import ipex


@pytest.fixture()
def fresh_probe():
    ipex._load.cache_clear()
    yield
    ipex._load.cache_clear()


def _cpu_note(monkeypatch) -> str:
    """The cpu row of the `tokenmill plugins` listing, built in this process (so the fake IPEX is seen)."""
    monkeypatch.setenv("TOKENMILL_PLUGINS", "cpu")
    rows = describe_plugins(load_plugins())
    return format_table([row for row in rows if row["name"] == "cpu"])


def test_absent_ipex_is_reported_as_not_installed(monkeypatch, fresh_probe):
    monkeypatch.setitem(sys.modules, ipex.MODULE_NAME, None)
    assert "intel_extension_for_pytorch not in use: not installed (pip install 'tokenmill[cpu-ipex]')" in _cpu_note(monkeypatch)


def test_a_version_for_another_torch_is_reported_as_a_mismatch(monkeypatch, fresh_probe):
    monkeypatch.setitem(sys.modules, ipex.MODULE_NAME, SimpleNamespace(__version__="2.3.100+cpu"))
    note = _cpu_note(monkeypatch)
    assert f"version 2.3.100+cpu does not match torch {torch.__version__}" in note
    assert ipex.ipex_version() is None and ipex.ipex_ops() == {}


def test_a_matching_ipex_is_reported_in_use_and_supplies_its_norm(monkeypatch, fresh_probe):
    major_minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    functional = SimpleNamespace(rms_norm=lambda x, weight, eps: x * weight)
    monkeypatch.setitem(sys.modules, ipex.MODULE_NAME,
                        SimpleNamespace(__version__=f"{major_minor}.0+cpu", llm=SimpleNamespace(functional=functional)))
    assert f"intel_extension_for_pytorch {major_minor}.0+cpu in use" in _cpu_note(monkeypatch)
    assert set(ipex.ipex_ops()) == {"rms_norm"}


def test_a_broken_ipex_import_is_reported_with_its_error(monkeypatch, fresh_probe):
    monkeypatch.setattr(ipex.importlib, "import_module", lambda name: (_ for _ in ()).throw(OSError("libintel-ext.so: cannot open")))
    assert "its import failed (OSError: libintel-ext.so: cannot open)" in ipex.ipex_status()
