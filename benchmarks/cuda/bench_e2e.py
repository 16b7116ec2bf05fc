"""End-to-end figures of issue 6 on one GPU, with a random-weight Llama-3-8B-shaped model.

Phases (all by default, each one `--phases` name): `hf` transformers generate at batch 128
(512-token prompts, 128 new tokens); `startup` LLM(...) plus capturing every CUDA graph;
`single` (`single16k`) single-stream decode at a 1k (16k) context against the bandwidth roofline; `throughput`
500 requests of ~200 input / ~180 output tokens sent at once with ignore_eos; `batch128` the
transformers workload through tokenmill. The HBM copy bandwidth is measured in the same process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import random_llama  # noqa: E402
from bench_kernels import copy_bandwidth  # noqa: E402

PHASES = ("hf", "startup", "single", "single16k", "throughput", "batch128")


def _tokens(rng: torch.Generator, n: int, vocab: int) -> list[int]:
    return torch.randint(3, vocab, (n,), generator=rng).tolist()


def bench_hf(folder: Path, rng: torch.Generator) -> dict:
    """transformers generate, greedy, batch 128 x (512 prompt + 128 new), bf16."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16, device_map="cuda")
    ids = torch.tensor([_tokens(rng, 512, 128256) for _ in range(128)], device="cuda")
    kw = dict(max_new_tokens=128, min_new_tokens=128, do_sample=False, pad_token_id=0)
    model.generate(ids[:4, :32], **dict(kw, max_new_tokens=4, min_new_tokens=4))  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(ids, **kw)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert out.shape == (128, 640), out.shape
    del model, out
    gc.collect()
    torch.cuda.empty_cache()
    return {"hf_batch128_tok_s": 128 * 128 / seconds, "hf_batch128_s": seconds}


def start_llm(folder: Path, **engine_options) -> tuple[object, dict]:
    """LLM(...), which captures every decode graph at start-up (its warm-up step); capture_s is their share.

    `engine_options` go to LLM as they are (max_num_seqs=..., max_num_batched_tokens=...); None values are dropped.
    """
    from tokenmill import LLM

    start = time.perf_counter()
    options = {k: v for k, v in engine_options.items() if v is not None}
    llm = LLM(model=str(folder), dtype="bfloat16", device="cuda", **options)
    loaded = time.perf_counter() - start
    step = llm.engine.runner._step
    captured = getattr(step, "capture_seconds", 0.0)
    engine = llm.engine
    return llm, {"startup_s": time.perf_counter() - start, "load_s": loaded, "capture_s": captured,
                 "graphs": len(getattr(step, "graphs", {})), "kv_blocks": engine.num_blocks,
                 "max_model_len": engine.max_model_len,
                 "max_concurrency_at_max_len": engine.num_blocks * engine.args.block_size / engine.max_model_len}


def _generate(llm, prompts: list[list[int]], max_tokens, **kw) -> float:
    from tokenmill import SamplingParams

    lens = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
    params = [SamplingParams(max_tokens=n, ignore_eos=True, **kw) for n in lens]
    torch.cuda.synchronize()
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    assert [len(o.outputs[0].token_ids) for o in outs] == lens
    return seconds


def graph_replay_ms(llm, size: int = 1, reps: int = 50) -> float:
    """GPU time of one captured decode step of `size` rows, ids to logits (no host work): the floor."""
    entry = llm.engine.runner._step.graphs[size]
    entry.graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        entry.graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def bench_single(llm, rng: torch.Generator, bandwidth: float, context: int = 1024) -> dict:
    """Decode rate of one stream at a `context`-token prompt: 256 / (t(1 + 256 tokens) - t(1 token)), median of 3."""
    _generate(llm, [_tokens(rng, context, 128256)], 2, temperature=0.0)  # compiles the prefill kernels
    decode = []
    for _ in range(3):
        first = _generate(llm, [_tokens(rng, context, 128256)], 1, temperature=0.0)
        full = _generate(llm, [_tokens(rng, context, 128256)], 257, temperature=0.0)
        decode.append(256 / (full - first))
    cfg = random_llama.config_dict(random_llama.LLAMA3_8B)
    shapes = random_llama.all_shapes(cfg)
    weights = sum(torch.Size(s).numel() for s in shapes.values()) * 2
    embed = torch.Size(shapes["model.embed_tokens.weight"]).numel() * 2  # one row read per token
    kv_per_token = cfg["num_hidden_layers"] * 2 * cfg["num_key_value_heads"] * 128 * 2
    kv = kv_per_token * (context + 128)  # mean context over the 256 decode steps
    median = sorted(decode)[1]
    roofline = bandwidth / (weights - embed + kv)
    tag = "single" if context == 1024 else f"single{context // 1024}k"
    return {f"{tag}_tok_s": median, f"{tag}_runs": decode, f"{tag}_roofline_tok_s": roofline,
            f"{tag}_roofline_all_weights_tok_s": bandwidth / (weights + kv), f"{tag}_of_roofline": median / roofline,
            "graph_replay_ms_b1": graph_replay_ms(llm), f"{tag}_roofline_step_ms": 1e3 / roofline}


def throughput_lengths(num: int = 500) -> tuple[list[int], list[int]]:
    """Input ~ U[50, 350] (mean 200) and output ~ U[40, 320] (mean 180) lengths, from their own seed,
    so bench_online.py sends the server exactly the lengths the offline run generates."""
    rng = torch.Generator().manual_seed(1234)
    return torch.randint(50, 351, (num,), generator=rng).tolist(), torch.randint(40, 321, (num,), generator=rng).tolist()


def bench_throughput(llm, rng: torch.Generator, temperature: float, runs: int = 1) -> dict:
    """500 requests of throughput_lengths(), all at once, with ignore_eos.

    With `runs` > 1 the same lengths are sent again with fresh random prompts (so the prefix cache
    cannot help); the figures are of the median run, and `throughput_runs_req_s` lists every run
    in the order it ran (the first one may be slower: it is the first to touch large batches).
    """
    ins, outs = throughput_lengths()
    times = [_generate(llm, [_tokens(rng, n, 128256) for n in ins], outs, temperature=temperature, seed=0)
             for _ in range(runs)]
    seconds = sorted(times)[len(times) // 2]
    return {"throughput_req_s": 500 / seconds, "throughput_out_tok_s": sum(outs) / seconds,
            "throughput_total_tok_s": (sum(ins) + sum(outs)) / seconds, "throughput_s": seconds,
            "throughput_runs_req_s": [500 / t for t in times]}


def bench_batch128(llm, rng: torch.Generator) -> dict:
    """The transformers workload: 128 prompts of 512 tokens, 128 new tokens each, greedy."""
    seconds = _generate(llm, [_tokens(rng, 512, 128256) for _ in range(128)], 128, temperature=0.0)
    return {"batch128_tok_s": 128 * 128 / seconds, "batch128_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="/tmp/llama3-8b-random")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--json", default=None)
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature of the 500-request run")
    parser.add_argument("--throughput-runs", type=int, default=1, help="times the 500 requests are sent (median kept)")
    parser.add_argument("--max-num-seqs", type=int, default=None, help="engine setting (default: the engine's)")
    parser.add_argument("--max-num-batched-tokens", type=int, default=None, help="engine setting (default: the engine's)")
    parser.add_argument("--no-gemv-tuning", action="store_true",
                        help="keep the GEMV's default tile for every batch-1 linear (to compare with the tuned tiles)")
    parser.add_argument("--async-scheduling", choices=("on", "off"), default=None,
                        help="engine setting: schedule step n+1 while step n runs (default: the platform's; on for CUDA)")
    parser.add_argument("--processes", type=int, default=1,
                        help="run the phases in this many fresh processes, one after the other, and report each "
                             "process's figures in order plus their median (figures vary by ~15%% per process)")
    args = parser.parse_args()
    if args.processes > 1:
        over_processes(args)
        return
    phases = args.phases.split(",")
    folder = Path(args.model_dir)
    result: dict = {"device": torch.cuda.get_device_name(), "gemv_tuning": not args.no_gemv_tuning}
    if args.no_gemv_tuning:
        from tokenmill_triton import gemv_tuning

        gemv_tuning.ENABLED = False
    if not (folder / "config.json").exists():
        start = time.perf_counter()
        random_llama.write_model(folder, random_llama.LLAMA3_8B, device="cuda")
        result["write_model_s"] = time.perf_counter() - start
    result["copy_bandwidth_TBs"] = (bandwidth := copy_bandwidth()) / 1e12
    rng = torch.Generator().manual_seed(0)
    if "hf" in phases:
        result.update(bench_hf(folder, rng))
        print(json.dumps(result), flush=True)
    llm, startup = start_llm(folder, max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                             async_scheduling=on_off(args.async_scheduling))
    result.update(startup, max_num_seqs=llm.engine.args.max_num_seqs,
                  max_num_batched_tokens=llm.engine.args.max_num_batched_tokens,
                  async_scheduling=llm.engine.async_scheduling)
    from tokenmill_triton import gemv_tuning

    result["gemv_tiles"] = {k: "x".join(map(str, v)) for k, v in gemv_tuning.choices().items()}
    print(json.dumps(result), flush=True)
    _generate(llm, [_tokens(rng, 64, 128256) for _ in range(8)], 8, temperature=0.0)  # warm-up
    for name, fn in (("single", lambda: bench_single(llm, rng, bandwidth)),
                     ("single16k", lambda: bench_single(llm, rng, bandwidth, 16384)), ("throughput", lambda: bench_throughput(llm, rng, args.temperature, args.throughput_runs)),
                     ("batch128", lambda: bench_batch128(llm, rng))):
        if name in phases:
            result.update(fn())
            print(json.dumps(result), flush=True)
    if "hf_batch128_tok_s" in result and "batch128_tok_s" in result:
        result["batch128_vs_hf"] = result["batch128_tok_s"] / result["hf_batch128_tok_s"]
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    os._exit(0)  # skip interpreter teardown of the engine's threads and CUDA state


def on_off(value: str | None) -> bool | None:
    """--async-scheduling on/off as the engine's True/False; None leaves the platform's choice."""
    return None if value is None else value == "on"


def over_processes(args: argparse.Namespace) -> None:
    """Run this script `args.processes` times in fresh processes; print each one's figures and the medians."""
    import statistics
    import subprocess
    import tempfile

    runs = []
    for i in range(args.processes):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, __file__, "--model-dir", args.model_dir, "--phases", args.phases, "--json", out.name,
                   "--temperature", str(args.temperature), "--throughput-runs", str(args.throughput_runs)]
            for flag, value in (("--max-num-seqs", args.max_num_seqs), ("--max-num-batched-tokens", args.max_num_batched_tokens),
                                ("--async-scheduling", args.async_scheduling)):
                cmd += [flag, str(value)] if value is not None else []
            cmd += ["--no-gemv-tuning"] if args.no_gemv_tuning else []
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            runs.append(json.loads(Path(out.name).read_text()))
        print(json.dumps({"process": i, **{k: v for k, v in runs[-1].items() if isinstance(v, (int, float))}}),
              flush=True)
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    result = {"device": runs[0].get("device"), "processes": args.processes,
              "median": {k: statistics.median(r[k] for r in runs if k in r) for k in keys},
              "per_process_in_order": {k: [r.get(k) for r in runs] for k in keys}}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
