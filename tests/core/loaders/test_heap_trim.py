"""trim_heap hands freed heap pages back to the OS, where the C library has malloc_trim (glibc)."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from tokenmill.loaders.heap_trim import trim_heap


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_small_allocations_leave_the_process_after_the_trim():
    assert ctypes.util.find_library("c")
    chunks = [bytearray(64 << 10) for _ in range(3000)]  # ~190 MiB of allocations below the mmap threshold
    for chunk in chunks:
        chunk[::4096] = b"\1" * len(chunk[::4096])  # touch every page
    del chunk
    before = _rss_kib()
    del chunks[1::2]  # holes between live chunks: glibc keeps their pages (it trims only the heap's top)
    kept = _rss_kib()
    assert trim_heap() is True
    after = _rss_kib()
    assert after < kept - (60 << 10), (before, kept, after)  # most of the ~95 MiB in holes went back
