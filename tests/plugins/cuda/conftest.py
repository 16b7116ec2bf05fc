"""Fixtures of the CUDA plugin tests: a random-weight Llama checkpoint writer (benchmarks/cuda)."""

import importlib.util
from pathlib import Path

import pytest

_WRITER = Path(__file__).resolve().parents[3] / "benchmarks" / "cuda" / "random_llama.py"


@pytest.fixture(scope="session")
def random_llama():
    """The benchmarks' random_llama module (write_model, TINY, LLAMA3_8B), loaded by path."""
    spec = importlib.util.spec_from_file_location("tokenmill_bench_random_llama", _WRITER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
