"""The CLI's flags as a vLLM user types them: --model, usage on a typo, defaults in help, aliases, sizes."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from tokenmill import LLM
from tokenmill.cli.main import build_parser, main, parse_args
from tokenmill.config import EngineArgs, parse_bytes
from tokenmill.errors import TokenmillError


def _parse(*argv: str):
    return parse_args(build_parser(), list(argv))


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines; compare on single spaces


def test_serve_takes_the_model_as_flag_or_positional():
    assert _parse("serve", "--model", "m/dir").model == "m/dir"
    assert _parse("serve", "m/dir").model == "m/dir"
    assert _parse("serve", "m/dir", "--model", "m/dir").model == "m/dir"
    assert _parse("serve").model is None


def test_two_different_models_are_one_clear_error(capsys):
    assert main(["serve", "a/b", "--model", "c/d"]) == 2
    assert "two models were given" in capsys.readouterr().err


@pytest.mark.parametrize("argv, usage", [(["serve", "--bogus"], "usage: tokenmill serve"),
                                         (["generate", "hi", "--max-tokns", "3"], "usage: tokenmill generate"),
                                         (["bench", "serve", "--nope"], "usage: tokenmill bench serve")])
def test_unknown_flag_prints_the_subcommands_usage(capsys, argv, usage):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith(usage) and "unrecognized arguments" in err


def test_serve_help_shows_defaults(capsys):
    text = _help(capsys, "serve")
    for expected in ("--port PORT port to listen on (default: 8000)", "(default: 127.0.0.1)",
                     "--block-size BLOCK_SIZE tokens per KV-cache block (a power of two) (default: 16)",
                     "most sequences running at once (default: the platform's; 512 on GPUs of 70 GiB or more, else 256)",
                     "--kv-cache-memory", "(default: the plugin's choice",
                     "token budget of one engine step (default: the platform's; 8192 on GPUs of 70 GiB or more, else 2048)",
                     "half = float16, float = float32"):
        assert expected in text, expected


def test_generate_help_shows_sampling_defaults(capsys):
    text = _help(capsys, "generate")
    assert "most tokens per reply (default: 128)" in text and "0 = greedy (default: 0.0)" in text
    chat = _help(capsys, "chat")
    assert "(default: the model's generation_config)" in chat and "most tokens per reply (default: 512)" in chat


def test_dtype_aliases():
    assert EngineArgs(dtype="half").dtype == "float16"
    assert EngineArgs(dtype="float").dtype == "float32"
    assert EngineArgs.from_cli_args(_parse("generate", "--dtype", "half")).dtype == "float16"
    with pytest.raises(TokenmillError, match="half"):
        EngineArgs(dtype="double")


def test_byte_sizes():
    assert parse_bytes("2GiB") == 2 * 2**30
    assert parse_bytes("500MB") == 500 * 10**6
    assert parse_bytes("1.5 GB") == 1_500_000_000
    assert parse_bytes("50TB") == 50 * 10**12
    assert parse_bytes("4096") == 4096
    assert EngineArgs(kv_cache_memory="64MiB").kv_cache_memory == 64 * 2**20
    for bad in ("50XB", "lots", "-1GB", "0"):
        with pytest.raises(TokenmillError) as info:
            parse_bytes(bad, "--kv-cache-memory")
        assert "--kv-cache-memory" in str(info.value)
        if bad != "0":
            assert "KiB, MiB, GiB" in str(info.value) and "KB, MB, GB" in str(info.value)


def test_bad_size_on_the_command_line_names_the_units(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "hi", "--kv-cache-memory", "50XB"])
    err = capsys.readouterr().err
    assert "usage: tokenmill generate" in err and "argument --kv-cache-memory" in err and "GiB" in err


def test_vllm_flag_spellings():
    args = _parse("serve", "--no-enable-prefix-caching", "--kv-cache-memory-bytes", "1GiB", "-tp", "1",
                  "--trust-remote-code", "--disable-uvicorn-access-log", "--disable-log-stats")
    engine = EngineArgs.from_cli_args(args)
    assert engine.enable_prefix_caching is False and engine.kv_cache_memory == 2**30
    assert engine.trust_remote_code and not args.access_log and args.stats_interval == 0
    parallel = EngineArgs.from_cli_args(_parse("serve", "-tp", "2", "--distributed-executor-backend", "ray"))
    assert parallel.tensor_parallel_size == 2 and parallel.distributed_executor_backend == "ray"
    with pytest.raises(TokenmillError, match="tensor-parallel-size must be a positive integer"):
        EngineArgs.from_cli_args(_parse("serve", "--tensor-parallel-size", "0"))


def test_gpu_memory_utilization_reads_the_environment(monkeypatch):
    monkeypatch.setenv("TOKENMILL_GPU_MEMORY_UTILIZATION", "0.5")
    assert EngineArgs().gpu_memory_utilization == 0.5
    assert EngineArgs.from_cli_args(_parse("serve")).gpu_memory_utilization == 0.5
    assert EngineArgs.from_cli_args(_parse("serve", "--gpu-memory-utilization", "0.7")).gpu_memory_utilization == 0.7
    monkeypatch.setenv("TOKENMILL_GPU_MEMORY_UTILIZATION", "most")
    with pytest.raises(TokenmillError, match="TOKENMILL_GPU_MEMORY_UTILIZATION"):
        EngineArgs()


def test_llm_signature_and_docstring_list_every_engine_option():
    params = [p for p in inspect.signature(LLM.__init__).parameters if p not in ("self", "unsupported")]
    assert set(params) == {f.name for f in fields(EngineArgs)}
    for name in params:
        assert f":param {name}:" in LLM.__doc__, name
    defaults = EngineArgs()
    for p in inspect.signature(LLM.__init__).parameters.values():
        if p.name in params and p.name != "gpu_memory_utilization":
            assert p.default == getattr(defaults, p.name), p.name


@pytest.mark.parametrize("keyword, expected", [("pipeline_parallel_size", "pipeline parallelism is not built"),
                                               ("swap_space", "recomputed"), ("enable_lora", "LoRA"),
                                               ("not_a_keyword", "it takes: model, tokenizer")])
def test_llm_refuses_unsupported_keywords_by_name(keyword, expected):
    with pytest.raises(TokenmillError) as info:
        LLM(**{keyword: 1})
    assert keyword in str(info.value) and expected in str(info.value)
    assert not isinstance(info.value, TypeError)


def test_llm_refuses_a_bad_parallel_layout_clearly():
    with pytest.raises(TokenmillError, match="tensor-parallel-size must be a positive integer"):
        LLM(tensor_parallel_size=0)
    with pytest.raises(TokenmillError, match="distributed-executor-backend 'slurm' is not one of mp, ray"):
        LLM(tensor_parallel_size=2, distributed_executor_backend="slurm")
