"""Discovers plugins through entry points, checks their contract version, picks a platform and asks it for pieces.

Only `tokenmill_platform` is asked of every plugin. Every other hook goes to the chosen platform's
plugin alone, through pluggy's subset hook callers, so plugins need no name guards (contract 2).
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from tokenmill import contract_version, hookspecs
from tokenmill.errors import PluginError
from tokenmill.interfaces import Availability, Platform

ENV_ALLOW_LIST = "TOKENMILL_PLUGINS"  # comma-separated plugin names; unset means all
ENV_NO_AUTOLOAD = "TOKENMILL_DISABLE_PLUGIN_AUTOLOAD"  # "1": load no entry points at all
ENV_DEVICE = "TOKENMILL_DEVICE"  # force a platform by name
INSTALL_HINT = "pip install 'tokenmill[cpu]'  (or [cuda], [rocm], [gaudi], [tpu] for your hardware)"
IN_TREE_EXTRAS = ("cpu", "cuda", "rocm", "gaudi", "tpu")  # devices with a tokenmill[NAME] extra


@dataclass(slots=True)
class PluginRecord:
    """One discovered plugin: where it came from and what its platform says about itself."""

    name: str  # entry-point name
    distribution: str
    version: str
    platform: Platform | None = None
    availability: Availability = field(default_factory=lambda: Availability(False, "not loaded"))
    load_error: str | None = None  # set when importing or describing the plugin failed


class PluginManager:
    """Holds the pluggy manager, the discovered plugins and the hooks to ask them for pieces."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self._objects: dict[str, Any] = {}  # plugin name -> the registered module or object
        self._callers: dict[tuple[str, str], Any] = {}  # (platform name, hook name) -> subset caller

    # ------------------------------------------------------------------ loading

    def load_entry_points(self) -> None:
        """Load the `tokenmill.plugins` group, honouring the allow-list and the autoload switch."""
        if os.environ.get(ENV_NO_AUTOLOAD, "") not in ("", "0"):
            return
        allowed = _allow_list()
        for ep in entry_points(group=hookspecs.ENTRY_POINT_GROUP):
            if allowed is None or ep.name in allowed:
                self._load_one(ep)

    def _load_one(self, ep: EntryPoint) -> None:
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if ep.name in self.records:
            other = self.records[ep.name].distribution
            raise PluginError(
                f"two plugins claim the name {ep.name!r}: distributions {other!r} and {dist!r}; "
                f"uninstall one of them or set {ENV_ALLOW_LIST} to choose"
            )
        record = PluginRecord(ep.name, dist, version)
        self.records[ep.name] = record
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            record.load_error = f"import failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            record.availability = Availability(
                False, f"plugin {ep.name!r} ({dist}) failed to import: {exc!r}; reinstall it "
                       f"(pip install --force-reinstall {dist}), uninstall it, or leave it out with "
                       f"{ENV_ALLOW_LIST}=<the plugins to load>")
            return
        self.register(module, ep.name, record)

    def register(self, plugin: Any, name: str, record: PluginRecord | None = None) -> PluginRecord:
        """Register a plugin object (used for entry points and for tests' in-process plugins)."""
        record = record or self.records.setdefault(name, PluginRecord(name, "(registered in process)", "?"))
        self.records[name] = record
        self._callers.clear()  # subset callers exclude the plugins registered when they were made
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:  # a misspelt hook or a wrong signature
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            record.load_error = f"invalid hook implementation: {exc}"
            record.availability = Availability(False, f"plugin {name!r} is invalid: {exc}")
            return record
        try:
            platform = plugin.tokenmill_platform()
        except Exception as exc:
            record.load_error = f"tokenmill_platform() raised {type(exc).__name__}: {exc}"
            record.availability = Availability(False, record.load_error)
            self.pm.unregister(plugin)
            return record
        record.platform = platform
        record.availability = _check(record, platform)
        self._objects[name] = plugin
        if contract_version.refusal(platform.contract_version, name) is not None:
            self.pm.unregister(plugin)  # never call hooks of a plugin built for another contract
        elif platform.name != name:
            record.availability = Availability(
                False, f"entry point {name!r} describes a platform named {platform.name!r}; they must match"
            )
            self.pm.unregister(plugin)
        return record

    # ------------------------------------------------------------------ choosing

    def select(self, device: str | None = None) -> Platform:
        """The platform to run on: `device`, else $TOKENMILL_DEVICE, else the best available."""
        device = device or os.environ.get(ENV_DEVICE) or None
        if not self.records:
            hidden = _hidden_by_env()
            what = f"is loaded{hidden}" if hidden else "is installed"
            raise PluginError(f"no tokenmill plugin {what}; install one: {INSTALL_HINT}")
        if device is not None:
            return self._named(device)
        usable = [r for r in self.records.values() if r.availability.available]
        if not usable:
            reasons = "; ".join(f"{r.name}: {r.availability.reason}" for r in self.records.values())
            raise PluginError(f"no installed plugin can run here ({reasons}); install one: {INSTALL_HINT}")
        return max(usable, key=lambda r: r.platform.priority).platform

    def _named(self, device: str) -> Platform:
        record = self.records.get(device)
        if record is None:
            raise PluginError(_missing_device(device, sorted(self.records), _hidden_by_env()))
        if not record.availability.available:
            raise PluginError(f"device {device!r} is not available: {record.availability.reason}")
        return record.platform

    # ------------------------------------------------------------------ pieces

    def hook(self, platform: Platform, hook_name: str) -> Any:
        """The hook `hook_name` as implemented by `platform`'s own plugin alone."""
        key = (platform.name, hook_name)
        caller = self._callers.get(key)
        if caller is None:
            mine = self._objects.get(platform.name)
            others = [p for n, p in self._objects.items() if n != platform.name and self.pm.is_registered(p)]
            if mine is None or not self.pm.is_registered(mine):
                raise PluginError(f"platform {platform.name!r} has no registered plugin; it cannot be asked for {hook_name}")
            caller = self._callers[key] = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
        return caller

    def startup(self, platform: Platform, options: dict[str, Any]) -> None:
        """Let the chosen plugin prepare itself (tokenmill_startup), once, before the model loads."""
        self.hook(platform, "tokenmill_startup")(platform=platform, options=options)

    def attention_backend(self, platform: Platform, spec: Any) -> Any:
        """The platform's attention backend for `spec`; refuses with the backend's reasons."""
        backend = self._required("tokenmill_attention_backend", platform, spec=spec)
        reasons = backend.unsupported_reasons(spec)
        if reasons:
            raise PluginError(f"{platform.name} attention backend {backend.name!r} cannot run this model: " + "; ".join(reasons))
        return backend

    def kv_allocator(self, platform: Platform, device_index: int = 0, memory_utilization: float = 0.9) -> Any:
        """The platform's KV-cache allocator for one device, told the share of memory it may fill."""
        return self._required("tokenmill_kv_allocator", platform, device_index=device_index,
                              memory_utilization=memory_utilization)

    def communicator(self, platform: Platform, group: Any = None) -> Any:
        """The platform's communicator over `group` (None: the default world group)."""
        return self._required("tokenmill_communicator", platform, group=group)

    def op_overrides(self, platform: Platform) -> dict[str, Any]:
        """The op overrides the platform's plugin offers (merged, when it returns several)."""
        merged: dict[str, Any] = {}
        for result in reversed(self.hook(platform, "tokenmill_op_overrides")(platform=platform)):
            merged.update(result.ops)
        return merged

    def linear_method(self, platform: Platform, scheme: str) -> Any:
        """The platform's LinearMethod for `scheme`, or None when it has none."""
        return self.hook(platform, "tokenmill_linear_method")(platform=platform, scheme=scheme)

    def step_runner(self, platform: Platform, options: dict[str, Any]) -> Any:
        """The platform's step runner, or None to run eagerly."""
        return self.hook(platform, "tokenmill_step_runner")(platform=platform, options=options)

    def shape_buckets(self, platform: Platform, limits: dict[str, int]) -> Any:
        """The static platform's declared ShapeBuckets, or None for the core's default."""
        return self.hook(platform, "tokenmill_shape_buckets")(platform=platform, limits=limits)

    def execution_context(self, platform: Platform) -> Any:
        """The platform's ExecutionContext, or None for inference mode and no sync."""
        return self.hook(platform, "tokenmill_execution_context")(platform=platform)

    def _required(self, hook_name: str, platform: Platform, **kwargs: Any) -> Any:
        result = self.hook(platform, hook_name)(platform=platform, **kwargs)
        if result is None:
            raise PluginError(f"plugin {platform.name!r} does not implement {hook_name}, which every plugin must supply")
        return result


def _missing_device(device: str, known: list[str], hidden: str) -> str:
    """Why --device names no loaded plugin, with an install hint only where tokenmill has that extra."""
    installed = f"installed: {', '.join(known) or 'none'}"
    if hidden:
        return f"no plugin named {device!r} is loaded{hidden} ({installed})"
    if device in IN_TREE_EXTRAS:
        return (f"no plugin named {device!r} is installed ({installed}); install it: pip install "
                f"'tokenmill[{device}]', or from a checkout pip install -e '.[{device}]' -e plugins/{device} "
                f"(the README's source installs list each extra's folders)")
    return (f"no installed plugin provides device {device!r} ({installed}); pick one of those with --device "
            f"or ${ENV_DEVICE}, or install the third-party plugin that provides {device!r}")


def _hidden_by_env() -> str:
    """Why installed plugins may have been skipped, naming the variable to change."""
    if os.environ.get(ENV_NO_AUTOLOAD, "") not in ("", "0"):
        return f" because {ENV_NO_AUTOLOAD} is set (unset it to load installed plugins)"
    if _allow_list() is not None:
        return f" because {ENV_ALLOW_LIST}={os.environ[ENV_ALLOW_LIST]!r} matches none (fix or unset it)"
    return ""


def _allow_list() -> set[str] | None:
    raw = os.environ.get(ENV_ALLOW_LIST, "").strip()
    return {n.strip() for n in raw.split(",") if n.strip()} if raw else None


def _check(record: PluginRecord, platform: Platform) -> Availability:
    refusal = contract_version.refusal(platform.contract_version,
                                       f"{record.name!r} ({record.distribution} {record.version})")
    if refusal is not None:
        return Availability(False, refusal)
    try:
        return platform.is_available()
    except Exception as exc:
        return Availability(False, f"is_available() raised {type(exc).__name__}: {exc}")


def load_plugins() -> PluginManager:
    """A PluginManager with every allowed entry-point plugin loaded."""
    manager = PluginManager()
    manager.load_entry_points()
    return manager
