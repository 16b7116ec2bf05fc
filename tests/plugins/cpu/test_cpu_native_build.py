"""Building the native kernels: cached on disk, loaded once, and absent (with a reason) without a compiler."""

from __future__ import annotations

import tokenmill_cpu
from tokenmill_cpu import native_build


def test_without_a_compiler_kernels_are_absent_and_the_platform_says_why(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(native_build.shutil, "which", lambda name: None)
    assert native_build.load_kernel("layer_ops.cpp", defines=("TM_TEST_NO_COMPILER",)) is None
    note = tokenmill_cpu.tokenmill_platform().is_available().reason
    assert "no C++ compiler" in note and "g++" in note


def test_switched_off_the_platform_says_so(monkeypatch):
    monkeypatch.setenv(native_build.ENV_DISABLE, "0")
    assert native_build.ENV_DISABLE in tokenmill_cpu.tokenmill_platform().is_available().reason


def test_a_build_is_cached_on_disk_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENMILL_CACHE_DIR", str(tmp_path))
    lib = native_build.load_kernel("layer_ops.cpp", defines=("TM_TEST_CACHE",))
    assert lib is not None and hasattr(lib, "tm_rms_norm")
    built = list((tmp_path / "kernels").glob("layer_ops-*.so"))
    assert len(built) == 1  # one file for this variant, named by its build key
    assert native_build.load_kernel("layer_ops.cpp", defines=("TM_TEST_CACHE",)) is lib  # one load per process


def test_the_platform_names_the_compiler_it_builds_with():
    assert "native kernels built with" in tokenmill_cpu.tokenmill_platform().is_available().reason
