"""tokenmill: an LLM inference engine whose hardware support is a set of pluggy plugins."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["LLM", "SamplingParams", "EngineArgs", "__version__"]

_LAZY = {
    "LLM": "tokenmill.llm",
    "SamplingParams": "tokenmill.sampling.params",
    "EngineArgs": "tokenmill.config",
    "RequestOutput": "tokenmill.outputs",
    "CompletionOutput": "tokenmill.outputs",
}


def __getattr__(name: str) -> Any:
    # Lazy so `import tokenmill` (and the CLI's start) does not pay for torch and the engine.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tokenmill' has no attribute {name!r}")
