"""Plugin discovery through real entry points: temporary *.dist-info dirs on an isolated sys.path."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tokenmill.errors import PluginError
from tokenmill.interfaces import CONTRACT_VERSION
from tokenmill.plugin_manager import (
    ENV_ALLOW_LIST,
    ENV_DEVICE,
    ENV_NO_AUTOLOAD,
    PluginManager,
    load_plugins,
)

PLUGIN_SOURCE = '''
"""A plugin written by the test: one platform, and attention that answers only for it."""
from dataclasses import dataclass
from tokenmill.hookspecs import hookimpl
from tokenmill.interfaces import Availability

@dataclass(frozen=True)
class FakePlatform:
    name: str = {platform_name!r}
    device_type: str = "cpu"
    priority: int = {priority}
    contract_version: object = {contract!r}
    supported_dtypes: tuple = ("float32",)
    dist_backend: str = "gloo"
    static_shapes: bool = False
    graph_capture: object = None

    def is_available(self):
        return Availability({available}, {reason!r})

@hookimpl
def tokenmill_platform():
    return FakePlatform()

@hookimpl
def tokenmill_kv_allocator(platform, device_index):
    return "allocator of " + {platform_name!r} if platform.name == {platform_name!r} else None
'''


class FakeSite:
    """A site directory of installed distributions, each a dist-info with one tokenmill entry point."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: list[str] = []

    def install(self, ep_name: str, *, dist: str | None = None, source: str | None = None, version: str = "1.2.3",
                priority: int = 50, available: bool = True, reason: str = "", contract: object = CONTRACT_VERSION,
                platform_name: str | None = None) -> str:
        """Write a plugin module plus its distribution metadata; returns the module's name."""
        dist = dist or f"fake-{ep_name}"
        module = f"tm_fake_{ep_name}_{uuid.uuid4().hex[:8]}"
        source = source if source is not None else PLUGIN_SOURCE.format(
            platform_name=platform_name or ep_name, priority=priority, contract=contract,
            available=available, reason=reason,
        )
        (self.root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8")
        (info / "entry_points.txt").write_text(f"[tokenmill.plugins]\n{ep_name} = {module}\n", encoding="utf-8")
        self.modules.append(module)
        importlib.invalidate_caches()
        return module


def _holds_metadata(entry: str) -> bool:
    path = Path(entry or ".")
    return path.is_dir() and (any(path.glob("*.dist-info")) or any(path.glob("*.egg-info")))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSite:
    """Only this site's distributions are discoverable; the real installed plugins are hidden."""
    isolated = [str(tmp_path)] + [entry for entry in sys.path if not _holds_metadata(entry)]
    monkeypatch.setattr(sys, "path", isolated)
    for name in (ENV_ALLOW_LIST, ENV_NO_AUTOLOAD, ENV_DEVICE):
        monkeypatch.delenv(name, raising=False)
    importlib.invalidate_caches()
    fake = FakeSite(tmp_path)
    yield fake
    for module in fake.modules:
        sys.modules.pop(module, None)


def test_isolated_site_hides_the_real_plugins(site: FakeSite) -> None:
    site.install("alpha")
    assert sorted(load_plugins().records) == ["alpha"]


def test_no_plugin_installed_names_the_extra(site: FakeSite) -> None:
    manager = load_plugins()
    assert manager.records == {}
    with pytest.raises(PluginError, match=r"no tokenmill plugin is installed.*tokenmill\[cpu\]"):
        manager.select()


def test_plugin_that_raises_on_import_is_named_with_its_exception(site: FakeSite) -> None:
    site.install("broken", dist="acme-broken", source="raise RuntimeError('driver table missing')\n")
    site.install("good", priority=5)
    manager = load_plugins()
    record = manager.records["broken"]
    assert not record.availability.available
    assert "broken" in record.availability.reason and "acme-broken" in record.availability.reason
    assert "RuntimeError: driver table missing" in record.load_error
    assert manager.select().name == "good"  # one broken plugin does not take the others down
    with pytest.raises(PluginError, match=r"'broken'.*driver table missing"):
        manager.select("broken")


@pytest.mark.parametrize("future, fix", [("3.0", "upgrade tokenmill"), ("2.9", "upgrade tokenmill")])
def test_newer_contract_is_refused_naming_both_versions_and_the_fix(site: FakeSite, future: str, fix: str) -> None:
    site.install("future", dist="acme-future", contract=future, priority=99)
    site.install("current", priority=1)
    manager = load_plugins()
    reason = manager.records["future"].availability.reason
    assert f"contract {future}" in reason and f"contract {CONTRACT_VERSION}" in reason and "acme-future" in reason
    assert fix in reason
    assert manager.pm.get_plugin("future") is None  # its hooks are never called
    assert manager.select().name == "current"
    with pytest.raises(PluginError, match=rf"'future' is not available.*contract {future}"):
        manager.select("future")


@pytest.mark.parametrize("version", [1, "1.0", "2", CONTRACT_VERSION])
def test_older_and_current_contracts_load_and_answer(site: FakeSite, version: object) -> None:
    """A contract-1 plugin (int 1, with its name guards) keeps working beside contract-2 ones."""
    site.install("legacy", contract=version, priority=60)
    site.install("other", priority=1)
    manager = load_plugins()
    platform = manager.select()
    assert platform.name == "legacy", manager.records["legacy"].availability
    assert manager.kv_allocator(platform, 0) == "allocator of legacy"


@pytest.mark.parametrize("version", ["two", "2.0.1", 2.0, None])
def test_malformed_contract_version_is_refused(site: FakeSite, version: object) -> None:
    site.install("odd", contract=version)
    reason = load_plugins().records["odd"].availability.reason
    assert "not a version" in reason and f'"{CONTRACT_VERSION}"' in reason


UNGUARDED_SOURCE = '''
"""A contract-2 plugin whose allocator hook has no name guard."""
from dataclasses import dataclass
from tokenmill.hookspecs import hookimpl
from tokenmill.interfaces import Availability

@dataclass(frozen=True)
class P:
    name: str = {name!r}
    device_type: str = "cpu"
    priority: int = {priority}
    contract_version: str = "2.0"
    supported_dtypes: tuple = ("float32",)
    dist_backend: str = "gloo"
    static_shapes: bool = False
    graph_capture: object = None

    def is_available(self):
        return Availability(True)

@hookimpl
def tokenmill_platform():
    return P()

@hookimpl
def tokenmill_kv_allocator(platform, device_index):
    return "allocator of " + {name!r}
'''


def test_only_the_chosen_platforms_plugin_answers(site: FakeSite) -> None:
    """Unguarded hookimpls of two plugins: each platform gets its own plugin's answer, never the other's."""
    site.install("alpha", source=UNGUARDED_SOURCE.format(name="alpha", priority=5))
    site.install("beta", source=UNGUARDED_SOURCE.format(name="beta", priority=9))
    manager = load_plugins()
    for name in ("alpha", "beta"):
        assert manager.kv_allocator(manager.select(name), 0) == f"allocator of {name}"
    with pytest.raises(PluginError, match="does not implement tokenmill_attention_backend"):
        manager.attention_backend(manager.select("alpha"), None)


def test_a_plugin_registered_later_never_answers_for_an_earlier_platform(site: FakeSite) -> None:
    site.install("alpha", source=UNGUARDED_SOURCE.format(name="alpha", priority=5))
    manager = load_plugins()
    alpha = manager.select("alpha")
    assert manager.kv_allocator(alpha, 0) == "allocator of alpha"  # builds alpha's subset caller
    namespace: dict = {}
    exec(UNGUARDED_SOURCE.format(name="late", priority=1), namespace)
    manager.register(type("Late", (), {k: staticmethod(v) for k, v in namespace.items()
                                       if k.startswith("tokenmill_")})(), "late")
    assert manager.kv_allocator(alpha, 0) == "allocator of alpha"
    assert manager.kv_allocator(manager.select("late"), 0) == "allocator of late"


def test_unknown_third_party_device_gets_no_made_up_extra(site: FakeSite) -> None:
    site.install("current")
    with pytest.raises(PluginError) as info:
        load_plugins().select("nosuchdev")
    assert "tokenmill[nosuchdev]" not in str(info.value) and "installed: current" in str(info.value)
    assert "third-party plugin that provides 'nosuchdev'" in str(info.value)
    with pytest.raises(PluginError, match=r"pip install 'tokenmill\[rocm\]'"):
        load_plugins().select("rocm")


def test_requested_device_unavailable_gives_the_plugins_reason(site: FakeSite) -> None:
    site.install("widget", available=False, reason="no widget card on PCI bus 3")
    site.install("fallback", priority=1)
    with pytest.raises(PluginError, match="device 'widget' is not available: no widget card on PCI bus 3"):
        load_plugins().select("widget")


def test_unknown_device_lists_what_is_installed(site: FakeSite) -> None:
    site.install("alpha")
    site.install("beta")
    with pytest.raises(PluginError, match=r"no installed plugin provides device 'gamma' \(installed: alpha, beta\).*third-party plugin"):
        load_plugins().select("gamma")


def test_two_plugins_claiming_one_name_are_both_named(site: FakeSite) -> None:
    site.install("twin", dist="acme-twin")
    site.install("twin", dist="other-twin")
    with pytest.raises(PluginError, match="'twin'") as caught:
        load_plugins()
    assert "acme-twin" in str(caught.value) and "other-twin" in str(caught.value)


def test_allow_list_loads_only_named_plugins(site: FakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    modules = {name: site.install(name) for name in ("alpha", "beta", "gamma")}
    monkeypatch.setenv(ENV_ALLOW_LIST, " gamma, alpha ")
    assert sorted(load_plugins().records) == ["alpha", "gamma"]
    assert modules["beta"] not in sys.modules  # a plugin left off the list is not even imported


def test_autoload_off_imports_nothing_but_allows_explicit_registration(
    site: FakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = site.install("alpha")
    monkeypatch.setenv(ENV_NO_AUTOLOAD, "1")
    manager = load_plugins()
    assert manager.records == {} and module not in sys.modules
    manager.register(importlib.import_module(module), "alpha")
    platform = manager.select()
    assert platform.name == "alpha"
    assert manager.kv_allocator(platform) == "allocator of alpha"


def test_autoload_off_error_names_the_switch(site: FakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    site.install("alpha")
    monkeypatch.setenv(ENV_NO_AUTOLOAD, "1")
    with pytest.raises(PluginError, match=ENV_NO_AUTOLOAD):
        load_plugins().select()


def test_highest_priority_available_platform_wins(site: FakeSite) -> None:
    site.install("low", priority=10)
    site.install("high", priority=50)
    site.install("best_but_absent", priority=90, available=False, reason="no card")
    manager = load_plugins()
    assert manager.select().name == "high"
    assert manager.kv_allocator(manager.select()) == "allocator of high"  # hooks answer for their own platform


def test_nothing_available_lists_every_reason(site: FakeSite) -> None:
    site.install("a", available=False, reason="no card A")
    site.install("b", available=False, reason="no card B")
    with pytest.raises(PluginError, match=r"tokenmill\[cpu\]") as caught:
        load_plugins().select()
    assert "a: no card A" in str(caught.value) and "b: no card B" in str(caught.value)


def test_device_argument_and_environment_override_the_priority(site: FakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    site.install("low", priority=10)
    site.install("high", priority=50)
    manager = load_plugins()
    assert manager.select("low").name == "low"
    monkeypatch.setenv(ENV_DEVICE, "low")
    assert manager.select().name == "low"
    assert manager.select("high").name == "high"  # --device beats TOKENMILL_DEVICE
    monkeypatch.setenv(ENV_DEVICE, "missing")
    with pytest.raises(PluginError, match="no installed plugin provides device 'missing'"):
        manager.select()


def test_entry_point_and_platform_names_must_match(site: FakeSite) -> None:
    site.install("alpha", platform_name="beta")
    reason = load_plugins().records["alpha"].availability.reason
    assert "'alpha'" in reason and "'beta'" in reason


def test_platform_whose_availability_check_raises_gets_a_reason(site: FakeSite) -> None:
    source = PLUGIN_SOURCE.format(platform_name="shaky", priority=5, contract=CONTRACT_VERSION, available=True, reason="")
    source = source.replace("return Availability(True, '')", "raise OSError('driver went away')")
    site.install("shaky", source=source)
    availability = load_plugins().records["shaky"].availability
    assert not availability.available and "OSError: driver went away" in availability.reason


def test_plugin_with_an_unknown_hook_is_reported_not_fatal(site: FakeSite) -> None:
    source = PLUGIN_SOURCE.format(platform_name="typo", priority=5, contract=CONTRACT_VERSION, available=True, reason="")
    source += "\n@hookimpl\ndef tokenmill_attention(platform, spec):\n    return None\n"
    site.install("typo", source=source)
    site.install("good", priority=1)
    manager = load_plugins()
    assert "tokenmill_attention" in manager.records["typo"].availability.reason
    assert manager.select().name == "good"


def test_plugin_manager_starts_empty_without_entry_points() -> None:
    assert PluginManager().records == {}
