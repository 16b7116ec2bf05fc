"""Optional PNG of a serving benchmark's TTFT, TPOT, ITL and end-to-end latency distributions."""

from __future__ import annotations

from tokenmill.bench.serve_client import RequestResult
from tokenmill.errors import TokenmillError


def plot_distributions(results: list[RequestResult], path: str, title: str) -> None:
    """Four histograms (ms) in one PNG; needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise TokenmillError("--plot needs matplotlib; pip install matplotlib") from exc
    ok = [r for r in results if r.success]
    series = {
        "TTFT (ms)": [r.ttft * 1000 for r in ok],
        "TPOT (ms)": [(r.latency - r.ttft) * 1000 / (r.output_len - 1) for r in ok if r.output_len > 1],
        "ITL (ms)": [gap * 1000 for r in ok for gap in r.itl],
        "E2E latency (ms)": [r.latency * 1000 for r in ok],
    }
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (label, values) in zip(axes.flat, series.items()):
        ax.hist(values or [0.0], bins=40)
        ax.set_xlabel(label)
        ax.set_ylabel("count")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
