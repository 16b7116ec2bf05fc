"""Conformance: the platform describes itself with the types and values the contract asks for."""

from __future__ import annotations

import torch

from tokenmill.interfaces import CONTRACT_VERSION, Availability, Platform

KNOWN_DTYPES = {"float32", "bfloat16", "float16"}


def test_platform_satisfies_the_protocol(tokenmill_platform):
    assert isinstance(tokenmill_platform, Platform), "the platform lacks attributes the Platform protocol names"
    assert tokenmill_platform.contract_version == CONTRACT_VERSION
    assert isinstance(tokenmill_platform.name, str) and tokenmill_platform.name
    assert isinstance(tokenmill_platform.priority, int)
    assert isinstance(tokenmill_platform.static_shapes, bool)
    torch.device(tokenmill_platform.device_type)  # raises for a device type torch does not know


def test_supported_dtypes_are_known_names(tokenmill_platform):
    dtypes = set(tokenmill_platform.supported_dtypes)
    assert dtypes and dtypes <= KNOWN_DTYPES, f"supported_dtypes {sorted(dtypes)} must be a non-empty subset of {sorted(KNOWN_DTYPES)}"


def test_selected_platform_reports_itself_available(tokenmill_platform):
    availability = tokenmill_platform.is_available()
    assert isinstance(availability, Availability) and availability.available, availability


def test_allocator_device_matches_platform(tokenmill_platform, kv_allocator):
    assert kv_allocator.device.type == tokenmill_platform.device_type
