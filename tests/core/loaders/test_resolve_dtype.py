"""--dtype resolution against what a platform lists."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from tokenmill.errors import TokenmillError
from tokenmill.loaders import resolve_dtype
from tokenmill.loaders.dtype import resolve_kv_cache_dtype


@dataclass
class Listed:
    """Just the two Platform fields resolve_dtype reads."""

    supported_dtypes: tuple[str, ...]
    name: str = "testchip"


@pytest.mark.parametrize(
    ("supported", "expected"),
    [
        (("bfloat16", "float32", "float16"), torch.bfloat16),
        (("float32", "bfloat16", "float16"), torch.float32),
        (("float16", "float32"), torch.float16),
        (("float32",), torch.float32),
    ],
)
def test_auto_takes_the_platforms_preferred_dtype(supported, expected):
    assert resolve_dtype("auto", Listed(supported)) is expected


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16"])
def test_named_dtype_when_listed(name):
    assert resolve_dtype(name, Listed(("float32", "bfloat16", "float16"))) is getattr(torch, name)


def test_unlisted_dtype_is_refused_with_the_choices():
    with pytest.raises(TokenmillError) as exc_info:
        resolve_dtype("bfloat16", Listed(("float32", "float16")))
    message = str(exc_info.value)
    assert "bfloat16" in message and "testchip" in message and "float32, float16" in message


def test_unknown_dtype_name():
    with pytest.raises(TokenmillError, match="'int8'"):
        resolve_dtype("int8", Listed(("float32",)))


def test_the_cpu_plugin_prefers_bf16_only_where_native(cpu, tmp_path):
    from tokenmill_cpu.platform import dtypes_by_preference

    _, platform = cpu
    assert resolve_dtype("auto", platform) is getattr(torch, platform.supported_dtypes[0])
    avx2 = tmp_path / "avx2"
    avx2.write_text("flags : fpu sse avx2 fma\n")
    amx = tmp_path / "amx"
    amx.write_text("flags : fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    assert dtypes_by_preference(str(avx2))[0] == "float32"
    assert dtypes_by_preference(str(amx))[0] == "bfloat16"


@dataclass
class ListsQuantized(Listed):
    """A platform that runs quantized models in another dtype under auto."""

    quantized_dtypes: tuple[str, ...] = ("float32",)


def test_auto_takes_quantized_dtypes_for_a_quantized_model_only():
    platform = ListsQuantized(("bfloat16", "float32"))
    assert resolve_dtype("auto", platform, quantized=True) is torch.float32
    assert resolve_dtype("auto", platform, quantized=False) is torch.bfloat16
    assert resolve_dtype("auto", Listed(("bfloat16", "float32")), quantized=True) is torch.bfloat16


def test_explicit_dtypes_ignore_quantized_dtypes():
    platform = ListsQuantized(("bfloat16", "float32"))
    assert resolve_dtype("bfloat16", platform, quantized=True) is torch.bfloat16


def test_a_quantized_dtype_the_platform_does_not_support_is_skipped():
    assert resolve_dtype("auto", ListsQuantized(("bfloat16",)), quantized=True) is torch.bfloat16


@dataclass
class CachePlatform:
    """The Platform fields resolve_kv_cache_dtype reads."""

    kv_cache_dtypes: dict
    contract_version: str = "2.0"
    name: str = "testchip"


def test_auto_cache_under_auto_dtype_takes_the_platforms_kv_cache_dtypes_entry():
    platform = CachePlatform({"float32": "float16"})
    assert resolve_kv_cache_dtype("auto", torch.float32, platform, dtype_auto=True) is torch.float16
    assert resolve_kv_cache_dtype("auto", torch.bfloat16, platform, dtype_auto=True) is torch.bfloat16  # no entry
    assert resolve_kv_cache_dtype("float32", torch.float32, platform, dtype_auto=True) is torch.float32  # named wins
    assert resolve_kv_cache_dtype("auto", torch.float32, platform) is torch.float32  # an explicit --dtype: the model's


def test_auto_cache_is_the_model_dtype_without_the_member_or_for_a_contract_1_plugin():
    assert resolve_kv_cache_dtype("auto", torch.float32, Listed(("float32",)), dtype_auto=True) is torch.float32
    old = CachePlatform({"float32": "float16"}, contract_version="1")
    assert resolve_kv_cache_dtype("auto", torch.float32, old, dtype_auto=True) is torch.float32  # one dtype in 1.x
    unknown = CachePlatform({"float32": "int3"})
    assert resolve_kv_cache_dtype("auto", torch.float32, unknown, dtype_auto=True) is torch.float32
