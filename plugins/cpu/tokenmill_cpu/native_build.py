"""Compiles the plugin's C++ kernel sources into cached shared libraries and loads them with ctypes.

Why ctypes and a plain C ABI rather than torch.utils.cpp_extension: the kernels need no torch
headers, so a build takes about a second instead of a minute, and needs only a C++ compiler.
The library links the same libgomp that torch has already loaded, so its OpenMP threads are
torch's. Builds are cached under $TOKENMILL_CACHE_DIR/kernels (default ~/.cache/tokenmill),
keyed by the source, its sibling headers, the flags and the host CPU, since -march=native code
is host-specific.
A missing compiler or a failed build returns None: callers keep their torch fallback.
`start_builds` compiles every kernel in background threads (the compiler runs outside the GIL),
so a first start-up overlaps the ~4 s of compiling with reading the model.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
# Sources that pick their instruction set at run time (target pragmas + __builtin_cpu_supports):
# built for the baseline x86-64, so that every path they hold runs, and is testable, on this host.
RUNTIME_DISPATCH = frozenset({"quant_matmul.cpp"})
ENV_DISABLE = "TOKENMILL_CPU_NATIVE"  # "0" keeps every kernel on its torch fallback
SOURCES = ("paged_decode.cpp", "quant_matmul.cpp", "layer_ops.cpp", "casts.cpp", "decode_step.cpp")  # what a CPU engine loads

_builds: dict[tuple[str, tuple[str, ...]], Future] = {}  # one build and load per process and variant
_builds_lock = threading.Lock()
_builder = ThreadPoolExecutor(max_workers=len(SOURCES), thread_name_prefix="tokenmill-native-build")


def start_builds(source_names: tuple[str, ...] = SOURCES) -> None:
    """Start building (or loading) these kernels in the background; `load_kernel` waits for them."""
    for name in source_names:
        _start(name, ())


def load_kernel(source_name: str, defines: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    """The compiled library of the sibling file `source_name` (with -D `defines`), building it once;
    None if unavailable."""
    build = _start(source_name, defines)
    return None if build is None else build.result()


def _start(source_name: str, defines: tuple[str, ...]) -> Future | None:
    if os.environ.get(ENV_DISABLE, "1") == "0":
        return None
    with _builds_lock:
        key = (source_name, defines)
        if key not in _builds:
            _builds[key] = _builder.submit(_build_and_load, Path(__file__).with_name(source_name), defines)
        return _builds[key]


def describe() -> str:
    """Which kernels this host runs, for `tokenmill plugins`."""
    if os.environ.get(ENV_DISABLE, "1") == "0":
        return f"torch kernels: {ENV_DISABLE}=0"
    found = compiler()
    if found is None:
        return "torch kernels: no C++ compiler found; install g++ for the faster native ones"
    from tokenmill_cpu.isa import host_isa  # the paths the kernels take on this CPU

    return (f"native kernels built with {os.path.basename(found)}; {host_isa().describe()}; "
            "decode steps on blocks: one native call each (step runner; --enforce-eager: per op)")


def compiler() -> str | None:
    """The C++ compiler the kernels are built with ($CXX, else g++ or c++ on PATH); None if there is none."""
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _build_and_load(source: Path, defines: tuple[str, ...]) -> ctypes.CDLL | None:
    compiler_path = compiler()
    if compiler_path is None:
        log.info("no C++ compiler found: %s stays on its torch fallback", source.name)
        return None
    try:
        flags = (*_flags(source.name), *(f"-D{name}" for name in defines))
        target = _cache_dir() / f"{source.stem}-{_build_key(source, compiler_path, flags)}.so"
        if not target.exists():
            _compile(compiler_path, flags, source, target)
        return ctypes.CDLL(str(target))
    except subprocess.CalledProcessError as err:
        log.warning("building %s failed, using the torch fallback:\n%s", source.name, err.stderr)
    except OSError as err:
        log.warning("loading %s failed, using the torch fallback: %s", source.name, err)
    return None


def _flags(source_name: str) -> tuple[str, ...]:
    """FLAGS, with -march=native swapped for the baseline on x86-64 sources that dispatch at run time."""
    if source_name not in RUNTIME_DISPATCH or platform.machine() not in ("x86_64", "AMD64"):
        return FLAGS
    return (*(f for f in FLAGS if f != "-march=native"), "-mtune=native", "-ffp-contract=off")


def _compile(compiler: str, flags: tuple[str, ...], source: Path, target: Path) -> None:
    """Build into a temporary file, then rename: concurrent builders never see a partial library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *flags, str(source), "-o", tmp], check=True, capture_output=True, text=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build_key(source: Path, compiler: str, flags: tuple[str, ...]) -> str:
    digest = hashlib.sha256(source.read_bytes())
    for header in sorted(source.parent.glob("*.h")):  # the sources' shared headers
        digest.update(header.read_bytes())
    digest.update(" ".join((compiler, *flags, platform.machine(), _cpu_flags())).encode())
    return digest.hexdigest()[:16]


def _cpu_flags() -> str:
    """The host's CPU feature line (Linux), so a cache shared between hosts never runs foreign code."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _cache_dir() -> Path:
    root = os.environ.get("TOKENMILL_CACHE_DIR") or Path.home() / ".cache" / "tokenmill"
    return Path(root) / "kernels"
