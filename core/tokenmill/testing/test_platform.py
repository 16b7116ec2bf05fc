"""Conformance: the platform describes itself with the types and values the contract asks for."""

from __future__ import annotations

import torch

from tokenmill import contract_version
from tokenmill.interfaces import Availability, Platform

KNOWN_DTYPES = {"float32", "bfloat16", "float16"}


def test_platform_satisfies_the_protocol(tokenmill_platform):
    assert isinstance(tokenmill_platform, Platform), "the platform lacks attributes the Platform protocol names"
    refusal = contract_version.refusal(tokenmill_platform.contract_version, tokenmill_platform.name)
    assert refusal is None, refusal  # contract 1 plugins still load; CONTRACT_VERSION is the newest
    assert isinstance(tokenmill_platform.name, str) and tokenmill_platform.name
    assert isinstance(tokenmill_platform.priority, int)
    assert isinstance(tokenmill_platform.static_shapes, bool)
    assert isinstance(tokenmill_platform.dist_backend, str) and tokenmill_platform.dist_backend
    assert tokenmill_platform.graph_capture is None or isinstance(tokenmill_platform.graph_capture, str)
    torch.device(tokenmill_platform.device_type)  # raises for a device type torch does not know


def test_supported_dtypes_are_known_names(tokenmill_platform):
    dtypes = set(tokenmill_platform.supported_dtypes)
    assert dtypes and dtypes <= KNOWN_DTYPES, f"supported_dtypes {sorted(dtypes)} must be a non-empty subset of {sorted(KNOWN_DTYPES)}"


def test_selected_platform_reports_itself_available(tokenmill_platform):
    availability = tokenmill_platform.is_available()
    assert isinstance(availability, Availability) and availability.available, availability


def test_allocator_device_matches_platform(tokenmill_platform, kv_allocator):
    assert kv_allocator.device.type == tokenmill_platform.device_type


def test_scheduler_defaults_if_any_are_positive_limits(tokenmill_platform):
    from tokenmill.engine.scheduler_limits import platform_suggestions

    platform_suggestions(tokenmill_platform)  # raises PluginError naming a bad name or value


def test_async_scheduling_if_set_is_a_bool(tokenmill_platform):
    """The optional Platform.async_scheduling: True or False (None-like values are refused)."""
    value = getattr(tokenmill_platform, "async_scheduling", False)
    assert isinstance(value, bool), f"async_scheduling={value!r} must be True or False"
