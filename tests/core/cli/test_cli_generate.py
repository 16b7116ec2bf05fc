"""`tokenmill generate` runs real generation on the embedded default model from a fresh process."""

from __future__ import annotations

import subprocess
import sys


def _tokenmill(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenmill.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_generate_on_default_model():
    done = _tokenmill("generate", "What is the capital of France?", "--max-tokens", "12", "--dtype", "float32",
                      "--kv-cache-memory", "64MiB")
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout


def test_bad_model_path_is_one_clear_line():
    done = _tokenmill("generate", "hi", "--model", "/nonexistent/model")
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_unknown_device_names_the_fix():
    done = _tokenmill("generate", "hi", "--device", "quantum")
    assert done.returncode == 2
    assert "quantum" in done.stderr and "Traceback" not in done.stderr
