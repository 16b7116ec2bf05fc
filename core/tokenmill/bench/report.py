"""Prints benchmark figures as aligned lines and saves them as JSON."""

from __future__ import annotations

import json


def report(title: str, figures: dict[str, float | int | str], json_path: str | None) -> None:
    """Print `figures` under a title; write them to `json_path` when given."""
    print(f"============ {title} ============")
    for key, value in figures.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"{key:<36}{shown:>16}")
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)
