"""Model loading: checkpoints (safetensors directories, GGUF files) into a runnable ModelBundle."""

from tokenmill.loaders.bundle import ModelBundle, load_model_bundle, open_checkpoint
from tokenmill.loaders.dtype import resolve_dtype

__all__ = ["ModelBundle", "load_model_bundle", "open_checkpoint", "resolve_dtype"]
