"""`tokenmill bench latency` runs end to end and writes its figures as JSON numbers."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_latency_writes_numbers(tmp_path):
    out = tmp_path / "latency.json"
    done = subprocess.run([sys.executable, "-m", "tokenmill.cli.main", "bench", "latency", "--input-len", "16",
                           "--output-len", "4", "--kv-cache-memory", "64MiB", "--output-json", str(out)],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["platform"] == "cpu"
    numbers = {k: v for k, v in figures.items() if k not in ("platform", "dtype")}
    assert numbers and all(isinstance(v, (int, float)) for v in numbers.values()), numbers
    assert figures["ttft_ms"] > 0
