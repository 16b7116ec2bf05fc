"""Resolves the --dtype option against what the platform supports."""

from __future__ import annotations

from typing import Any

import torch

from tokenmill.errors import TokenmillError

_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_AUTO_PREFERENCE = ("bfloat16", "float16", "float32")


def resolve_dtype(dtype: str, platform: Any) -> torch.dtype:
    """'auto' -> the first of bfloat16, float16, float32 the platform lists; a named dtype must be listed."""
    supported = tuple(platform.supported_dtypes)
    if dtype == "auto":
        for name in _AUTO_PREFERENCE:
            if name in supported:
                return _TORCH_DTYPES[name]
        raise TokenmillError(f"platform {platform.name!r} lists no usable dtype (it lists {supported!r})")
    if dtype not in _TORCH_DTYPES:
        raise TokenmillError(f"--dtype {dtype!r} is not one of auto, {', '.join(_TORCH_DTYPES)}")
    if dtype not in supported:
        raise TokenmillError(
            f"--dtype {dtype} is not supported on {platform.name!r} (it supports {', '.join(supported)}); "
            f"pick one of those or --dtype auto"
        )
    return _TORCH_DTYPES[dtype]
