"""Resolves the --dtype option against what the platform supports."""

from __future__ import annotations

from typing import Any

import torch

from tokenmill import contract_version
from tokenmill.errors import TokenmillError

_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str, platform: Any, quantized: bool = False) -> torch.dtype:
    """'auto' -> the platform's preferred dtype (the first it lists); a named dtype must be listed.

    Platforms list bfloat16 first where it is native (CUDA from sm80, CPUs with AVX512-BF16 or
    AMX); on an AVX2-only CPU bfloat16 matmuls run several times slower than float32, so the CPU
    plugin lists float32 first there. `quantized`: the model's linear layers run packed from
    quantized storage; 'auto' then takes the platform's optional `quantized_dtypes` first, when it
    lists one (see auto_quantized).
    """
    supported = tuple(name for name in platform.supported_dtypes if name in _TORCH_DTYPES)
    if dtype == "auto" and quantized and auto_quantized(platform) is not None:
        return _TORCH_DTYPES[auto_quantized(platform)]
    if dtype == "auto":
        if not supported:
            raise TokenmillError(f"platform {platform.name!r} lists no usable dtype (it lists {platform.supported_dtypes!r})")
        return _TORCH_DTYPES[supported[0]]
    if dtype not in _TORCH_DTYPES:
        raise TokenmillError(f"--dtype {dtype!r} is not one of auto, {', '.join(_TORCH_DTYPES)}")
    if dtype not in supported:
        raise TokenmillError(
            f"--dtype {dtype} is not supported on {platform.name!r} (it supports {', '.join(supported)}); "
            f"pick one of those or --dtype auto"
        )
    return _TORCH_DTYPES[dtype]


def auto_quantized(platform: Any) -> str | None:
    """The dtype `--dtype auto` gives a quantized model here: the first of the platform's optional
    `quantized_dtypes` it also supports, else None (the plain auto choice).

    Why a separate list: a weight-only packed layer's speed hardly depends on the activation dtype
    at narrow steps, so a platform may run such models in float32 (exact activations, greedy
    tokens that match a float32 reference) where a dense model would halve its speed in float32.
    """
    listed = getattr(platform, "quantized_dtypes", None) or ()
    return next((name for name in listed if name in _TORCH_DTYPES and name in platform.supported_dtypes), None)


def resolve_kv_cache_dtype(kv_cache_dtype: str, model_dtype: torch.dtype, platform: Any,
                           dtype_auto: bool = False) -> torch.dtype:
    """'auto' -> the model dtype, or, when `dtype_auto` (--dtype auto chose the model dtype too), the
    platform's optional `kv_cache_dtypes` entry for it; a named dtype needs a platform whose contract
    has a separate cache dtype. An explicit --dtype keeps vLLM's meaning of auto: the model's dtype.

    Contract-1 backends know only one dtype for q/k/v and the cache, so they are refused a
    different cache dtype rather than handed one they would silently ignore. Whether the backend
    supports the dtype is its own `unsupported_reasons` to say.
    """
    if kv_cache_dtype == "auto":
        return auto_kv_cache_dtype(model_dtype, platform) if dtype_auto else model_dtype
    if kv_cache_dtype not in _TORCH_DTYPES:
        raise TokenmillError(f"--kv-cache-dtype {kv_cache_dtype!r} is not one of auto, {', '.join(_TORCH_DTYPES)}")
    wanted = _TORCH_DTYPES[kv_cache_dtype]
    version = contract_version.parse(platform.contract_version)
    if wanted != model_dtype and version is not None and version[0] < 2:
        raise TokenmillError(
            f"--kv-cache-dtype {kv_cache_dtype}: plugin {platform.name!r} was built for plugin contract "
            f"{version[0]}.{version[1]}, which has no KV-cache dtype separate from the model's; "
            f"use --kv-cache-dtype auto or a plugin built for contract 2"
        )
    return wanted


def auto_kv_cache_dtype(model_dtype: torch.dtype, platform: Any) -> torch.dtype:
    """The cache dtype `--dtype auto --kv-cache-dtype auto` gives a `model_dtype` model: the platform's
    optional `kv_cache_dtypes` (model dtype name -> cache dtype name) may name a narrower one, e.g.
    the CPU's float16 cache under float32 activations (half the KV bytes, each half widened exactly)."""
    name = str(model_dtype).removeprefix("torch.")
    wanted = (getattr(platform, "kv_cache_dtypes", None) or {}).get(name)
    if wanted not in _TORCH_DTYPES:
        return model_dtype
    version = contract_version.parse(platform.contract_version)
    return model_dtype if version is not None and version[0] < 2 else _TORCH_DTYPES[wanted]
