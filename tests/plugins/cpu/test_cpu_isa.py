"""The host ISA probe and the paths it picks, from cpuinfo files of the three kinds of CPU."""

from __future__ import annotations

import pytest
import torch

from tokenmill_cpu import native_build, paged_decode
from tokenmill_cpu.dense_gemm import prepacking_available
from tokenmill_cpu.isa import host_isa
from tokenmill_cpu.platform import kv_cache_dtypes

AMX = "avx2 fma f16c avx512f avx512bw avx512dq avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
ZEN5 = "avx2 fma f16c avx512f avx512bw avx512dq avx512vl avx512_vnni avx512_bf16"
AVX2 = "sse4_2 avx2 fma f16c"


def probe(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu {flags}\n\nprocessor\t: 1\nflags\t\t: fpu {flags}\n")
    return host_isa(str(path))


def test_a_bf16_cpu_hands_wide_bf16_steps_to_the_gemm_and_keeps_float32_on_vnni(tmp_path):
    isa = probe(tmp_path, AMX)
    assert isa.bf16 and isa.amx and isa.vnni512 and isa.blocks == "avx512_vnni"
    assert isa.max_block_rows(torch.bfloat16) == 16 and isa.max_block_rows(torch.float32) is None
    packed = " (oneDNN, prepacked)" if prepacking_available() else ""  # this torch and the real CPU decide
    auto = ("; quantized models under --dtype auto: float32 activations, packed layers' wide steps on bf16 "
            "GEMMs (blocks up to 16 rows)") if prepacking_available() else ""
    assert isa.auto_mode == prepacking_available()
    assert isa.describe() == ("block matmul avx512_vnni, AMX; bfloat16 models: blocks, above 16 rows the "
                              f"bfloat16 GEMM{packed}; float32 models: blocks{auto}; paged decode avx512_bf16 "
                              "(float32 models: float16 KV cache under --kv-cache-dtype auto)")


def test_avx512_bf16_without_amx(tmp_path):
    isa = probe(tmp_path, ZEN5)
    assert isa.bf16 and not isa.amx and isa.max_block_rows(torch.bfloat16) == 16
    assert "AMX" not in isa.describe() and isa.paged_decode == "avx512_bf16"


def test_an_avx2_cpu_keeps_bf16_on_the_blocks_and_float32_on_its_gemm_above_32_rows(tmp_path):
    isa = probe(tmp_path, AVX2)
    assert not isa.bf16 and not isa.vnni512 and isa.blocks == "avx2" and isa.paged_decode == "generic"
    assert isa.max_block_rows(torch.bfloat16) is None and isa.max_block_rows(torch.float32) == 32
    assert isa.max_block_rows(torch.float16) is None


def test_an_unreadable_cpuinfo_means_the_portable_choices(tmp_path):
    isa = host_isa(str(tmp_path / "missing"))
    assert isa.flags == frozenset() and isa.blocks == "portable" and isa.max_block_rows(torch.float32) == 32


def test_the_platform_note_names_the_paths_in_use():
    assert host_isa().describe() in native_build.describe()


def test_the_probe_names_the_paged_decode_path_the_kernel_takes():
    paths = paged_decode.available_isas()
    if not paths:
        pytest.skip("no C++ compiler: the kernel falls back to torch")
    assert host_isa().paged_decode == paths[-1]


def test_float32_models_get_a_float16_cache_only_where_the_avx512_decode_path_runs(tmp_path):
    """--kv-cache-dtype auto's choice under --dtype auto (platform.kv_cache_dtypes): float16 for float32 models
    on the avx512_bf16 path (with a compiler for the kernel), nothing on AVX2, where the generic
    path's float16 cache is slower than its float32 one."""
    expected = {"float32": "float16"} if native_build.compiler() is not None else {}
    (tmp_path / "zen5").mkdir(), (tmp_path / "avx2").mkdir()  # host_isa caches by path
    assert kv_cache_dtypes(probe(tmp_path / "zen5", ZEN5)) == expected
    assert kv_cache_dtypes(probe(tmp_path / "avx2", AVX2)) == {}
