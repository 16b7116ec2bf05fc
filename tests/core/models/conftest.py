"""Fixtures for the model-equivalence tests: the CPU plugin, found the way the engine finds it."""

from __future__ import annotations

import pytest

from harness import cpu_plugins


@pytest.fixture(scope="session")
def cpu():
    """(plugins, platform) for the installed CPU plugin."""
    return cpu_plugins()
