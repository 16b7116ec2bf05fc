"""Fixtures for the loader tests: the CPU plugin and a tiny saved model to damage."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tokenmill.plugin_manager import load_plugins

# The tiny-checkpoint writer lives beside the model-equivalence tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))


@pytest.fixture(scope="session")
def cpu():
    """(plugins, platform) for the installed CPU plugin."""
    plugins = load_plugins()
    return plugins, plugins.select("cpu")
