"""Benchmarks run from the CLI: offline throughput, single-stream latency, serving."""
