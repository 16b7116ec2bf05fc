"""Fixtures for the tensor-parallel tests: tiny checkpoints, engines over 1 and 2 ranks, loopback gloo."""

from __future__ import annotations

import os

import pytest

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tp_models import VARIANTS, write_tp_model

MiB = 1 << 20
ENGINE_OPTIONS = dict(dtype="float32", quantization="none", kv_cache_memory=8 * MiB, max_model_len=128,
                      device="cpu", num_threads=1)


@pytest.fixture(scope="session", autouse=True)
def loopback_gloo():
    """Keep gloo (and the Ray cluster the Ray test starts) on 127.0.0.1; spawned ranks inherit it."""
    before = os.environ.get("GLOO_SOCKET_IFNAME")
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    yield
    if before is None:
        os.environ.pop("GLOO_SOCKET_IFNAME", None)
    else:
        os.environ["GLOO_SOCKET_IFNAME"] = before


@pytest.fixture(scope="session")
def tp_model_dirs(tmp_path_factory):
    """variant -> a model directory (see tp_models.VARIANTS)."""
    root = tmp_path_factory.mktemp("tp_models")
    return {name: str(write_tp_model(root / name, name)) for name in VARIANTS}


@pytest.fixture
def make_tp_engine():
    """Build an EngineCore (keyword arguments are EngineArgs fields); every one built is shut down after."""
    engines = []

    def build(model: str, **kwargs) -> EngineCore:
        engine = EngineCore(EngineArgs(model=model, **{**ENGINE_OPTIONS, **kwargs}))
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.shutdown()
