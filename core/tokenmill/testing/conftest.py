"""Fixtures of the conformance kit: the plugin manager, the platform under test, its pieces and engine runs."""

from __future__ import annotations

import pytest
import torch

from tokenmill.interfaces import AttentionSpec
from tokenmill.plugin_manager import load_plugins
from tokenmill.testing.engine_probe import ProbeManager, Recording, make_engine, run_workload
from tokenmill.testing.tiny_model import write_tiny_llama

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


@pytest.fixture(scope="session")
def step_sync(tokenmill_manager, tokenmill_platform):
    """The platform's once-per-step sync (ExecutionContext.sync), or None where it supplies no context."""
    context = tokenmill_manager.execution_context(tokenmill_platform)
    return None if context is None else context.sync


@pytest.fixture(params=list(DTYPES))
def dtype(request: pytest.FixtureRequest, tokenmill_platform) -> torch.dtype:
    """Each dtype the platform claims to support; the others are skipped, not failed."""
    if request.param not in tokenmill_platform.supported_dtypes:
        pytest.skip(f"{tokenmill_platform.name} does not list {request.param} in supported_dtypes")
    return DTYPES[request.param]


# ----------------------------------------------------------------------------- engine runs


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random Llama checkpoint (safetensors) with a byte-level tokenizer."""
    return str(write_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def engine_dtype(tokenmill_platform) -> str:
    """float32 where the platform runs it (what the reference comparison needs), else its first dtype."""
    supported = tokenmill_platform.supported_dtypes
    return "float32" if "float32" in supported else supported[0]


@pytest.fixture(scope="session")
def engine_run(tokenmill_manager, tokenmill_platform, tiny_model_dir, engine_dtype):
    """(greedy tokens per request, Recording, engine) of the workload on the platform under test."""
    recording = Recording()
    probe = ProbeManager(tokenmill_manager, recording)
    engine = make_engine(tiny_model_dir, tokenmill_platform.name, engine_dtype, probe)
    # Start-up may call build_metadata outside any step (the profile run of allocators with
    # profile_peak): only the workload's steps are paired with their batches.
    recording.batches.clear()
    recording.steps.clear()
    return run_workload(engine), recording, engine


@pytest.fixture(scope="session")
def reference_tokens(tokenmill_manager, tiny_model_dir) -> dict[str, list[int]]:
    """The same workload's greedy tokens on the CPU reference plugin, in float32, in this process."""
    if "cpu" not in tokenmill_manager.records:
        pytest.fail("the end-to-end check compares with the CPU reference plugin, which is not loaded: "
                    "pip install 'tokenmill[cpu]' (and add cpu to TOKENMILL_PLUGINS if you set it)")
    return run_workload(make_engine(tiny_model_dir, "cpu", "float32", tokenmill_manager))
