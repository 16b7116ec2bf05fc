"""Hands the heap memory that loading freed back to the OS (glibc's malloc_trim; a no-op elsewhere).

Why: dequantizing and packing a model allocates and frees hundreds of MB of short-lived tensors.
glibc keeps most of those pages in its arenas, so the process's resident memory stays ~100 MB
above what the model holds (the default model on the CPU: 850 MB resident after load, 754 MB
after the trim). Nothing in Python or torch returns them; malloc_trim(0) does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)


def trim_heap() -> bool:
    """Release free heap pages to the OS; True when the C library has malloc_trim and released some."""
    trim = _malloc_trim()
    if trim is None:
        return False
    return bool(trim(0))


def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim  # glibc only: musl and macOS lack it
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim
