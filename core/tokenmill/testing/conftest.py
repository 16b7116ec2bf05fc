"""Fixtures of the conformance kit: the plugin manager, the platform under test and its pieces."""

from __future__ import annotations

import pytest
import torch

from tokenmill.interfaces import AttentionSpec
from tokenmill.plugin_manager import load_plugins

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--tokenmill-device",
        default=None,
        help="plugin/platform name to test (default: $TOKENMILL_DEVICE, else the best available)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def tokenmill_manager():
    """Every installed plugin, loaded through the entry-point group as the engine does."""
    return load_plugins()


@pytest.fixture(scope="session")
def tokenmill_platform(request: pytest.FixtureRequest, tokenmill_manager):
    """The platform under test: --tokenmill-device, else $TOKENMILL_DEVICE, else the best."""
    return tokenmill_manager.select(request.config.getoption("--tokenmill-device", default=None))


@pytest.fixture(scope="session")
def kv_allocator(tokenmill_manager, tokenmill_platform):
    """The platform's allocator for device 0; its `device` is where the kit puts tensors."""
    return tokenmill_manager.kv_allocator(tokenmill_platform, 0)


@pytest.fixture()
def make_backend(tokenmill_manager, tokenmill_platform):
    """Build the platform's attention backend for an AttentionSpec."""

    def make(spec: AttentionSpec):
        return tokenmill_manager.attention_backend(tokenmill_platform, spec)

    return make


@pytest.fixture(params=list(DTYPES))
def dtype(request: pytest.FixtureRequest, tokenmill_platform) -> torch.dtype:
    """Each dtype the platform claims to support; the others are skipped, not failed."""
    if request.param not in tokenmill_platform.supported_dtypes:
        pytest.skip(f"{tokenmill_platform.name} does not list {request.param} in supported_dtypes")
    return DTYPES[request.param]
