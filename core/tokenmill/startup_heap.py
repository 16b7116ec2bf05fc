"""Hands the objects alive after a server process's start-up to the garbage collector's permanent generation."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move everything alive after start-up (model, tokenizer, app) out of the garbage collector's
    view, so its full collections while serving scan only what requests allocate, not the whole
    heap: shorter pauses in the streams' latency, as vLLM's server does with gc.freeze()."""
    gc.collect()
    gc.freeze()
