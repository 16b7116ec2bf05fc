"""`tokenmill plugins`: lists every discovered plugin, its availability and the pieces it supplies."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from tokenmill.errors import PluginError
from tokenmill.plugin_manager import (
    ENV_ALLOW_LIST,
    ENV_NO_AUTOLOAD,
    INSTALL_HINT,
    PluginManager,
    PluginRecord,
    load_plugins,
)

# Hook name -> the piece it supplies, in the order the listing shows them.
SUPPLY_NAMES = {
    "tokenmill_attention_backend": "attention",
    "tokenmill_kv_allocator": "kv_allocator",
    "tokenmill_communicator": "communicator",
    "tokenmill_op_overrides": "op_overrides",
    "tokenmill_linear_method": "linear_methods",
    "tokenmill_step_runner": "step_runner",
    "tokenmill_startup": "startup",
    "tokenmill_shape_buckets": "shape_buckets",
    "tokenmill_execution_context": "execution_context",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `tokenmill plugins [--json]`."""
    parser = subparsers.add_parser("plugins", help="list installed hardware plugins and why each can or cannot run")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects, for scripts")


def run(args: argparse.Namespace) -> int:
    """Print the listing; exit 0 even when no plugin is available (the listing says why)."""
    manager = load_plugins()
    rows = describe_plugins(manager)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


def describe_plugins(manager: PluginManager) -> list[dict[str, Any]]:
    """One JSON-ready dict per discovered plugin, marking the one the engine would pick now."""
    try:
        selected: str | None = manager.select().name
    except PluginError:
        selected = None
    rows = [_describe(manager, record) for record in manager.records.values()]
    for row in rows:
        row["selected"] = row["name"] == selected
    return sorted(rows, key=lambda row: (row["priority"] is None, -(row["priority"] or 0), row["name"]))


def _describe(manager: PluginManager, record: PluginRecord) -> dict[str, Any]:
    platform = record.platform
    supplies, op_names = _supplies(manager, record)
    return {
        "name": record.name,
        "distribution": record.distribution,
        "version": record.version,
        "available": record.availability.available,
        "reason": record.availability.reason,
        "supplies": supplies,
        "op_overrides": op_names,
        "device_type": platform.device_type if platform else None,
        "priority": platform.priority if platform else None,
        "contract_version": platform.contract_version if platform else None,
        "static_shapes": platform.static_shapes if platform else None,
        "graph_capture": platform.graph_capture if platform else None,
        "error": record.load_error,
    }


def _supplies(manager: PluginManager, record: PluginRecord) -> tuple[list[str], list[str]]:
    """The pieces a registered plugin implements, and the op names its op_overrides hook offers."""
    plugin = manager.pm.get_plugin(record.name)
    if plugin is None:  # never imported, or refused (contract mismatch, platform() raised)
        return [], []
    implemented = {caller.name for caller in manager.pm.get_hookcallers(plugin) or []}
    supplies = [piece for hook, piece in SUPPLY_NAMES.items() if hook in implemented]
    op_names: list[str] = []
    if "op_overrides" in supplies and record.platform is not None:
        op_names = _offered_ops(manager, plugin, record)
    return supplies, op_names


def _offered_ops(manager: PluginManager, plugin: object, record: PluginRecord) -> list[str]:
    """Ask only this plugin's op_overrides implementation, with its own platform."""
    for impl in manager.pm.hook.tokenmill_op_overrides.get_hookimpls():
        if impl.plugin is plugin:
            try:
                result = impl.function(platform=record.platform)
            except Exception as exc:  # shown, not raised: the listing must cover every plugin
                return [f"<op_overrides raised {type(exc).__name__}: {exc}>"]
            return sorted(result.ops) if result is not None else []
    return []


def format_table(rows: list[dict[str, Any]]) -> str:
    """Human-readable listing: one block per plugin."""
    if not rows:
        return _why_empty()
    footer = "* = the device the engine picks now (override with --device NAME or TOKENMILL_DEVICE)"
    return "\n".join([*(_format_row(row) for row in rows), footer])


def _format_row(row: dict[str, Any]) -> str:
    mark = "*" if row["selected"] else " "
    state = "available" if row["available"] else "unavailable"
    supplies = [_format_supply(piece, row["op_overrides"]) for piece in row["supplies"]]
    lines = [
        f"{mark} {row['name']:<8} {row['distribution']} {row['version']}  priority {row['priority']}  "
        f"contract {row['contract_version']}{'  static shapes' if row['static_shapes'] else ''}  {state}",
        f"    {'reason' if not row['available'] else 'note'}: {row['reason'] or '-'}",
        f"    supplies: {', '.join(supplies) if supplies else 'nothing yet (platform description only)'}",
    ]
    if row["error"]:
        lines.append("    error: " + row["error"].strip().replace("\n", "\n      "))
    return "\n".join(lines)


def _format_supply(piece: str, op_names: list[str]) -> str:
    if piece != "op_overrides":
        return piece
    return f"op_overrides({', '.join(op_names) if op_names else 'none on this machine'})"


def _why_empty() -> str:
    """Why nothing was listed: autoload off, an allow-list matching nothing, or nothing installed."""
    if os.environ.get(ENV_NO_AUTOLOAD, "") not in ("", "0"):
        return f"plugin autoload is off ({ENV_NO_AUTOLOAD}={os.environ[ENV_NO_AUTOLOAD]}); unset it to list installed plugins"
    if os.environ.get(ENV_ALLOW_LIST, "").strip():
        return f"no installed plugin matches {ENV_ALLOW_LIST}={os.environ[ENV_ALLOW_LIST]!r}"
    return f"no tokenmill plugin is installed; install one: {INSTALL_HINT}"
