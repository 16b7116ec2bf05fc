"""Online against offline on one GPU, in one command: the 500-request workload of bench_e2e.py.

Offline: `LLM.generate` on the 500 requests in a fresh process. Online: `tokenmill serve` on the
same model, then the same 500 requests (the same lengths, ignore_eos, greedy, token-id prompts)
sent at rate inf through tokenmill's serving benchmark client, then a rate-20 Poisson run for
TTFT. Each server mode given in `--modes` is measured in turn (`process`: the engine core in its
own process, the default; `thread`: --no-engine-core-process). Prints one JSON line per figure
and a summary with online/offline ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VOCAB = 128256


def _requests(num: int, seed: int):
    import random

    from bench_e2e import throughput_lengths
    from tokenmill.bench.serve_dataset import ServeRequest

    ins, outs = throughput_lengths(num)
    rng = random.Random(seed)
    return [ServeRequest([rng.randrange(3, VOCAB) for _ in range(n)], n, m) for n, m in zip(ins, outs)]


def offline(model_dir: str) -> dict:
    """500 requests through LLM.generate after a warm-up, in this (fresh) process."""
    from bench_e2e import start_llm
    from tokenmill import SamplingParams

    llm, _ = start_llm(Path(model_dir))  # captures every decode graph up front, as bench_e2e does
    llm.generate([[5] * 64] * 8, SamplingParams(max_tokens=8, ignore_eos=True), use_tqdm=False)
    reqs = _requests(500, seed=1)
    params = [SamplingParams(max_tokens=r.output_len, ignore_eos=True, temperature=0.0) for r in reqs]
    start = time.perf_counter()
    llm.generate([r.prompt for r in reqs], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    return {"offline_req_s": 500 / seconds, "offline_out_tok_s": sum(r.output_len for r in reqs) / seconds}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(model_dir: str, mode: str, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tokenmill.cli.main", "serve", model_dir, "--dtype", "bfloat16", "--device", "cuda",
           "--port", str(port), "--log-level", "warning", "--no-access-log", "--stats-interval", "0"]
    if mode == "thread":
        cmd.append("--no-engine-core-process")
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the server did not come up in 300 s")


async def _online(port: int, rate: float, num: int, warm_full: bool) -> dict:
    from tokenmill.bench.serve_metrics import summarize
    from tokenmill.bench.serve_runner import ServeBenchConfig, new_client, run_requests

    cfg = ServeBenchConfig(base_url=f"http://127.0.0.1:{port}", request_rate=rate, ignore_eos=True, temperature=0.0)
    async with new_client() as client:
        # warm-up: the server captures its graphs lazily, so the whole workload runs once first
        await run_requests(cfg, _requests(num if warm_full else 16, seed=9), client)
        results, seconds = await run_requests(cfg, _requests(num, seed=1), client)
    return summarize(results, seconds)


def online(model_dir: str, mode: str, rate20_num: int, out_dir: Path) -> dict:
    port = _port()
    proc = _start_server(model_dir, mode, port, out_dir / f"server-{mode}.log")
    try:
        inf = asyncio.run(_online(port, float("inf"), 500, True))
        r20 = asyncio.run(_online(port, 20.0, rate20_num, False))
    finally:
        proc.terminate()
        proc.wait(60)
    keep = ("request_throughput", "output_throughput", "failed_requests", "median_ttft_ms", "p99_ttft_ms",
            "median_tpot_ms", "p99_itl_ms")
    return {f"{mode}_inf_{k}": inf.get(k) for k in keep} | {f"{mode}_rate20_{k}": r20.get(k) for k in keep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="/tmp/llama3-8b-random")
    parser.add_argument("--modes", default="process,thread")
    parser.add_argument("--offline-processes", type=int, default=1)
    parser.add_argument("--rate20-requests", type=int, default=200)
    parser.add_argument("--out-dir", default=os.environ.get("OUT", "/tmp"))
    parser.add_argument("--role", default="driver", choices=("driver", "offline"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "offline":
        print(json.dumps(offline(args.model_dir)), flush=True)
        os._exit(0)
    if not (Path(args.model_dir) / "config.json").exists():
        import random_llama

        random_llama.write_model(args.model_dir, random_llama.LLAMA3_8B, device="cuda")
    result: dict = {}
    runs = []
    for _ in range(args.offline_processes):
        out = subprocess.run([sys.executable, __file__, "--role", "offline", "--model-dir", args.model_dir],
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1])["offline_req_s"])
        print(json.dumps({"offline_req_s": runs[-1]}), flush=True)
    result["offline_req_s_in_order"] = runs
    result["offline_req_s"] = sorted(runs)[len(runs) // 2]
    for mode in args.modes.split(","):
        figures = online(args.model_dir, mode, args.rate20_requests, Path(args.out_dir))
        print(json.dumps(figures), flush=True)
        result |= figures
        result[f"{mode}_online_over_offline"] = figures[f"{mode}_inf_request_throughput"] / result["offline_req_s"]
    print(json.dumps(result, indent=1))
    (Path(args.out_dir) / "bench_online.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
