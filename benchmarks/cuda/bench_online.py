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

VOCAB = 128256  # main() reads the model's own vocab_size from its config.json when it is written
SAMPLE_STACKS = False  # --sample-stacks
DEVICE = os.environ.get("TOKENMILL_BENCH_DEVICE", "cuda")  # "cpu": a smoke test of this script off the GPU


def _requests(num: int, seed: int):
    import random

    from bench_e2e import throughput_lengths
    from tokenmill.bench.serve_dataset import ServeRequest

    ins, outs = throughput_lengths(num)
    rng = random.Random(seed)
    return [ServeRequest([rng.randrange(3, VOCAB) for _ in range(n)], n, m) for n, m in zip(ins, outs)]


def offline(model_dir: str, engine_options: dict) -> dict:
    """500 requests through LLM.generate after a warm-up, in this (fresh) process."""
    from bench_e2e import start_llm
    from tokenmill import SamplingParams

    llm, _ = start_llm(Path(model_dir), **engine_options)  # captures every decode graph up front, as bench_e2e does
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


def _engine_flags(engine_options: dict) -> list[str]:
    flags = []
    for name, value in engine_options.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):  # --async-scheduling / --no-async-scheduling
            flags.append(flag if value else flag.replace("--", "--no-", 1))
        elif value is not None:
            flags += [flag, str(value)]
    return flags


def _start_server(model_dir: str, mode: str, port: int, log: Path, engine_options: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tokenmill.cli.main", "serve", model_dir, "--dtype", "bfloat16", "--device", DEVICE,
           "--port", str(port), "--log-level", "warning", "--no-access-log", "--stats-interval", "0",
           *_engine_flags(engine_options)]
    if mode == "thread":
        cmd.append("--no-engine-core-process")
    env = dict(os.environ)
    if SAMPLE_STACKS:  # every process of the server samples its stacks into the output folder
        site = str(Path(__file__).resolve().parent / "sampling_site")
        env |= {"TOKENMILL_STACK_SAMPLES": str(log.parent), "PYTHONPATH": site + os.pathsep + env.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
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


async def _client_share(port: int, rate: float, requests: list, together: bool) -> tuple[list, float, float]:
    """Send `requests`; results and the client's CPU seconds. `together`: once probed, print "ready" and
    read the common start (a time.time()) from stdin, so that every client process sends from the same moment."""
    from tokenmill.bench.serve_runner import ServeBenchConfig, new_client, probe_server, run_requests

    cfg = ServeBenchConfig(base_url=f"http://127.0.0.1:{port}", request_rate=rate, ignore_eos=True, temperature=0.0)
    async with new_client() as client:
        # the probe (and the pool's first connect) before the common start: a probe sent after it
        # waited ~1.3 s behind the other clients' prefills, and held this client's requests back
        model = await probe_server(cfg, requests[0], client)
        if together:
            print("ready", flush=True)
            start_at = float(await asyncio.to_thread(sys.stdin.readline))
            await asyncio.sleep(max(start_at - time.time(), 0.0))
        cpu = time.process_time()
        results, seconds = await run_requests(cfg, requests, client, model)
    return results, seconds, time.process_time() - cpu


def _run_clients(port: int, rate: float, num: int, seed: int, processes: int) -> tuple[list, float, float]:
    """All `num` requests, split round-robin over `processes` client processes that start together, so the
    Python client (httpx parses every SSE chunk) is not what is measured; merged results, wall, client CPU s."""
    if processes == 1:
        return asyncio.run(_client_share(port, rate, _requests(num, seed), False))
    cmd = [sys.executable, __file__, "--role", "client", "--vocab", str(VOCAB), "--port", str(port), "--rate", str(rate),
           "--num", str(num), "--seed", str(seed), "--client-processes", str(processes)]
    procs = [subprocess.Popen([*cmd, "--share", str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for i in range(processes)]
    for p in procs:  # every client has started and probed (a fixed delay left some starting 0.7-1.2 s late)
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("a client process failed before its start")
    start_at = time.time() + 0.2
    for p in procs:
        p.stdin.write(f"{start_at}\n")
        p.stdin.flush()
    shares = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    from tokenmill.bench.serve_client import RequestResult

    results = [RequestResult(**r) for share in shares for r in share["results"]]
    wall = max(sh["end"] for sh in shares) - start_at
    return results, wall, sum(sh["cpu_s"] for sh in shares)


def client_role(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    mine = _requests(args.num, args.seed)[args.share::args.client_processes]
    results, _, cpu = asyncio.run(_client_share(args.port, args.rate / args.client_processes, mine, True))
    print(json.dumps({"results": [asdict(r) for r in results], "end": time.time(), "cpu_s": cpu}), flush=True)


def _cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU seconds of the server process and of each child (the engine-core process)."""
    import psutil

    proc = psutil.Process(pid)
    out = {"api": sum(proc.cpu_times()[:2])}
    for child in proc.children(recursive=True):
        out["engine"] = out.get("engine", 0.0) + sum(child.cpu_times()[:2])
    return out


def _online(port: int, pid: int, rate: float, num: int, warm_full: bool, processes: int) -> dict:
    from tokenmill.bench.serve_metrics import summarize

    # warm-up: the server captures its graphs at start-up; the whole workload runs once first anyway,
    # as the offline figure's process does, so both measure warm caches (cuBLAS, allocator)
    _run_clients(port, rate, num if warm_full else 16, 9, processes if warm_full else 1)
    before, t0 = _cpu_seconds(pid), time.time()
    results, seconds, client_cpu = _run_clients(port, rate, num, 1, processes)
    after, t1 = _cpu_seconds(pid), time.time()
    figures = summarize(results, seconds)
    figures["wall_window"] = [t0, t1]  # time.time() around the measured run (the step timeline's clock)
    figures["client_cpu_share"] = client_cpu / seconds / processes
    # per request, in the order sent: seconds after the first send, to the status line, to the first token
    first = min(r.sent_at for r in results)
    figures["sent_headers_ttft_s"] = sorted((round(r.sent_at - first, 4), round(r.headers, 4), round(r.ttft, 4))
                                            for r in results)
    if processes == 1:  # results are in arrival order: where in the run the slow first tokens were
        figures["ttft_ms_in_arrival_order"] = [round(r.ttft * 1e3, 1) for r in results]
    for name in after:
        figures[f"{name}_cpu_share"] = (after[name] - before.get(name, 0.0)) / seconds
    return figures


def online(model_dir: str, mode: str, rate20_num: int, out_dir: Path, engine_options: dict, processes: int) -> dict:
    port = _port()
    proc = _start_server(model_dir, mode, port, out_dir / f"server-{mode}.log", engine_options)
    try:
        inf = _online(port, proc.pid, float("inf"), 500, True, processes)
        r20 = _online(port, proc.pid, 20.0, rate20_num, False, 1)
    finally:
        proc.terminate()
        proc.wait(60)
    keep = ("request_throughput", "output_throughput", "failed_requests", "median_ttft_ms", "p99_ttft_ms",
            "median_tpot_ms", "p99_itl_ms", "client_cpu_share", "api_cpu_share", "engine_cpu_share", "wall_window")
    (out_dir / f"ttft-rate20-{mode}.json").write_text(json.dumps(r20.get("ttft_ms_in_arrival_order")))
    (out_dir / f"sent-headers-ttft-inf-{mode}.json").write_text(json.dumps(inf.get("sent_headers_ttft_s")))
    return {f"{mode}_inf_{k}": inf.get(k) for k in keep} | {f"{mode}_rate20_{k}": r20.get(k) for k in keep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="/tmp/llama3-8b-random")
    parser.add_argument("--modes", default="process,thread")
    parser.add_argument("--offline-processes", type=int, default=1)
    parser.add_argument("--rate20-requests", type=int, default=200)
    parser.add_argument("--out-dir", default=os.environ.get("OUT", "/tmp"))
    parser.add_argument("--client-processes", type=int, default=4,
                        help="client processes sharing the rate-inf run (one Python client saturates first)")
    parser.add_argument("--max-num-seqs", type=int, default=None, help="engine setting, offline and served")
    parser.add_argument("--max-num-batched-tokens", type=int, default=None, help="engine setting, offline and served")
    parser.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                        help="engine setting, offline and served (default: the platform's; on for CUDA)")
    parser.add_argument("--sample-stacks", action="store_true",
                        help="sample the server processes' Python stacks (stacks-*.json in --out-dir); slows them a little")
    parser.add_argument("--role", default="driver", choices=("driver", "offline", "client"), help=argparse.SUPPRESS)
    for name, kind in (("--port", int), ("--rate", float), ("--num", int), ("--seed", int),
                       ("--share", int), ("--vocab", int)):
        parser.add_argument(name, type=kind, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global VOCAB, SAMPLE_STACKS
    SAMPLE_STACKS = args.sample_stacks
    config = Path(args.model_dir) / "config.json"
    VOCAB = args.vocab or (json.loads(config.read_text())["vocab_size"] if config.exists() else VOCAB)
    engine_options = {"max_num_seqs": args.max_num_seqs, "max_num_batched_tokens": args.max_num_batched_tokens,
                      "async_scheduling": args.async_scheduling}
    if args.role == "client":
        client_role(args)
        os._exit(0)
    if args.role == "offline":
        print(json.dumps(offline(args.model_dir, engine_options)), flush=True)
        os._exit(0)
    if not (Path(args.model_dir) / "config.json").exists():
        import random_llama

        random_llama.write_model(args.model_dir, random_llama.LLAMA3_8B, device="cuda")
    result: dict = {"engine_options": engine_options, "client_processes": args.client_processes}
    runs = []
    for _ in range(args.offline_processes):
        out = subprocess.run([sys.executable, __file__, "--role", "offline", "--model-dir", args.model_dir,
                              *_engine_flags(engine_options)], check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1])["offline_req_s"])
        print(json.dumps({"offline_req_s": runs[-1]}), flush=True)
    result["offline_req_s_in_order"] = runs
    result["offline_req_s"] = sorted(runs)[len(runs) // 2] if runs else None  # --offline-processes 0: online only
    for mode in args.modes.split(","):
        figures = online(args.model_dir, mode, args.rate20_requests, Path(args.out_dir), engine_options,
                         args.client_processes)
        print(json.dumps(figures), flush=True)
        result |= figures
        if runs:
            result[f"{mode}_online_over_offline"] = figures[f"{mode}_inf_request_throughput"] / result["offline_req_s"]
    print(json.dumps(result, indent=1))
    (Path(args.out_dir) / "bench_online.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
