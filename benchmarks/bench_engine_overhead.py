"""Per-step host overhead of EngineCore, split by phase, on a tiny random Llama whose compute is near zero."""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.loaders.default_model import default_model_path
from tokenmill.sampling.params import SamplingParams
from tokenmill.tokenizer import load_tokenizer

MiB = 1 << 20
USAGE = """\
The model is 4 layers of hidden 64 with SmolLM2's tokenizer and vocabulary (49152), so the sampler,
detokenizer and logits work at their real sizes while the layers cost almost nothing. Only decode
steps are timed (prefill steps run but are skipped), at batch 1 and batch 64, for three kinds of
sampling parameters. Times are this thread's CPU time by default (torch runs on one thread here),
which other processes on a busy machine barely disturb; --wall uses wall time.

    python benchmarks/bench_engine_overhead.py                       # the table
    python benchmarks/bench_engine_overhead.py --profile b1-greedy   # cProfile of one case
"""
PARAMS = {
    "greedy": dict(temperature=0.0),
    "sample": dict(temperature=0.8, top_p=0.95, top_k=50, seed=1),
    "full": dict(temperature=0.8, top_p=0.95, top_k=50, seed=1, logprobs=5, repetition_penalty=1.1,
                 presence_penalty=0.2, frequency_penalty=0.2, stop=["\n\nUser:", "###"]),
}
BATCHES = {"b1": (1, 256), "b64": (64, 128)}  # name -> (requests, new tokens each)


def write_tiny_llama(directory: Path) -> Path:
    """A random 4-layer, hidden-64 Llama with SmolLM2's tokenizer, saved as safetensors."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = load_tokenizer(default_model_path())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True, architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


class PhaseTimer:
    """Wraps engine methods so each call adds its time to a named phase of the current step."""

    clock = staticmethod(time.thread_time)  # or time.perf_counter for wall time

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)

    def wrap(self, owner: object, name: str, phase: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = self.clock()
            try:
                return inner(*args, **kwargs)
            finally:
                self.current[phase] += self.clock() - t0

        setattr(owner, name, timed)

    def take(self) -> dict[str, float]:
        phases, self.current = dict(self.current), defaultdict(float)
        return phases


def instrument(engine: EngineCore) -> PhaseTimer:
    """Time schedule, build inputs, attention metadata, model (layers + logits) and sampling."""
    import tokenmill.worker.model_runner as runner_module

    timer = PhaseTimer()
    timer.wrap(engine.scheduler, "schedule", "schedule")
    timer.wrap(runner_module, "build_step_inputs", "inputs")
    timer.wrap(engine.runner.attn_backend, "build_metadata", "metadata")
    timer.wrap(engine.runner, "_step", "model")  # ids to logits: the layers and the output head
    timer.wrap(engine, "_sample", "sample")
    return timer


def prompts(engine: EngineCore, count: int) -> list[list[int]]:
    """`count` prompts of 20 to 200 tokens (one of ~100 for a single request)."""
    gen = torch.Generator().manual_seed(0)
    vocab = engine.bundle.arch.vocab_size
    lengths = [100] if count == 1 else torch.randint(20, 201, (count,), generator=gen).tolist()
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


def run_case(engine: EngineCore, timer: PhaseTimer, batch: str, kind: str) -> list[dict[str, float]]:
    """Every decode step's phase times (and 'step', the whole step) for one case."""
    count, new_tokens = BATCHES[batch]
    params = SamplingParams(max_tokens=new_tokens, ignore_eos=True, **PARAMS[kind])
    for i, ids in enumerate(prompts(engine, count)):
        engine.add_request(f"{batch}-{kind}-{i}", ids, params)
    steps = []
    while engine.has_unfinished_requests():
        prefill = engine.scheduler.num_waiting > 0 or any(
            r.num_computed_tokens < r.num_prompt_tokens for r in engine.scheduler.running)
        t0 = timer.clock()
        engine.step()
        total = timer.clock() - t0
        phases = timer.take()
        if not prefill:
            steps.append({**phases, "step": total})
    return steps


def summarise(steps: list[dict[str, float]]) -> dict[str, float]:
    """Median milliseconds per decode step of each phase, plus host = step - model."""
    names = sorted({k for s in steps for k in s})
    med = {k: statistics.median(s.get(k, 0.0) for s in steps) * 1e3 for k in names}
    med["host"] = statistics.median((s["step"] - s.get("model", 0.0)) for s in steps) * 1e3
    med["emit+other"] = med["host"] - sum(med.get(k, 0.0) for k in ("schedule", "inputs", "metadata", "sample"))
    return med


def build_engine(model_dir: Path) -> EngineCore:
    args = EngineArgs(model=str(model_dir), dtype="float32", device="cpu", kv_cache_memory=64 * MiB,
                      max_num_seqs=64, enable_prefix_caching=True)
    return EngineCore(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, epilog=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", help="cProfile one case, e.g. b1-greedy or b64-full")
    parser.add_argument("--cases", default=",".join(f"{b}-{k}" for b in BATCHES for k in PARAMS),
                        help="comma-separated cases to run (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings steady on a busy box)")
    parser.add_argument("--wall", action="store_true", help="time with the wall clock instead of thread CPU time")
    parser.add_argument("--json", help="also write the table here")
    ns = parser.parse_args()
    torch.set_num_threads(ns.threads)
    if ns.wall:
        PhaseTimer.clock = staticmethod(time.perf_counter)
    with tempfile.TemporaryDirectory() as tmp:
        engine = build_engine(write_tiny_llama(Path(tmp)))
        timer = instrument(engine)
        run_case(engine, timer, "b1", "greedy")  # warm-up
        if ns.profile:
            return profile(engine, timer, *ns.profile.split("-"))
        table = {case: summarise(run_case(engine, timer, *case.split("-"))) for case in ns.cases.split(",")}
    print_table(table)
    if ns.json:
        Path(ns.json).write_text(json.dumps(table, indent=1))


def profile(engine: EngineCore, timer: PhaseTimer, batch: str, kind: str) -> None:
    prof = cProfile.Profile()
    prof.enable()
    run_case(engine, timer, batch, kind)
    prof.disable()
    pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(30)


def print_table(table: dict[str, dict[str, float]]) -> None:
    cols = ["step", "model", "host", "schedule", "inputs", "metadata", "sample", "emit+other"]
    clock = "wall" if PhaseTimer.clock is time.perf_counter else "thread CPU"
    print(f"median ms per decode step ({clock} time, torch threads {torch.get_num_threads()})")
    print(f"{'case':<12}" + "".join(f"{c:>11}" for c in cols))
    for case, row in table.items():
        print(f"{case:<12}" + "".join(f"{row.get(c, 0.0):>11.3f}" for c in cols))


if __name__ == "__main__":
    main()
