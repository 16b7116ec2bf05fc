"""A model's own sampling defaults: generation_config.json's temperature, top_p, top_k, min_p, penalty.

vLLM applies these by default (`--generation-config auto`); tokenmill's chat does the same. The
embedded default model is a GGUF with no generation_config, so it takes the settings its model
card recommends.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tokenmill.loaders.default_model import DEFAULT_FILE

# generation_config.json key -> SamplingParams field
_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
         "repetition_penalty": "repetition_penalty"}
EMBEDDED_DEFAULTS = {"temperature": 0.2, "top_p": 0.9}  # SmolLM2-Instruct's model card
log = logging.getLogger(__name__)


def generation_defaults(source: str | Path) -> dict[str, Any]:
    """SamplingParams keyword arguments from the model at `source` (a directory or .gguf); {} if none."""
    path = Path(source)
    if path.name == DEFAULT_FILE:
        return dict(EMBEDDED_DEFAULTS)
    config = (path if path.is_dir() else path.parent) / "generation_config.json"
    if not config.is_file():
        return {}
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", config, exc)
        return {}
    return {field: data[key] for key, field in _KEYS.items() if isinstance(data.get(key), (int, float))}
