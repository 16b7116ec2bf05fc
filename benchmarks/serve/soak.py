"""Soak benchmark (issue 18): mixed hostile and ordinary traffic against `tokenmill serve` for a while.

Starts the server as a child process (default model, CPU), warms it up, records its RSS as the
baseline, then runs DURATION seconds of mixed traffic from CONCURRENCY clients: streamed chats,
streams the client drops after a few chunks, bad inputs (lone surrogates, broken JSON, unknown
roles, n over the cap, an oversized stop string, a body over the limit, a request chat template),
n>1 requests and prompts near the context length. At the end it waits for the server to go idle
and prints requests by kind and status, peak RSS, the end RSS as a ratio of the baseline, and the
KV blocks free. It exits 1 if any request got a 5xx, blocks stay in use, or the end RSS exceeds
the baseline by more than --rss-margin. Not a test: run it by hand.

The KV pool is 256 MiB here (--kv-cache-memory; later flags override it): the CPU allocator
commits the pool's pages lazily, so RSS grows by up to the pool's size as traffic first touches
its blocks (the prefix cache hands out the least recently used block, so every block gets
touched). A small pool is filled during the warm-up, so growth after the baseline is not that.

    python benchmarks/serve/soak.py --duration 600        # the issue's 10 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import subprocess
import sys
import time

import httpx

_SERVER = "from tokenmill.cli.main import main; raise SystemExit(main())"
_SURROGATE_BODY = '{"messages": [{"role": "user", "content": "hi \\ud800"}], "max_tokens": 4}'


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):  # with or without labels (model_name)
            return float(line.split()[1])
    raise KeyError(name)


class Soak:
    """One soak run: the kinds of request, and the tally of what came back."""

    def __init__(self, url: str, long_prompt: str, rng: random.Random) -> None:
        self.url, self.long_prompt, self.rng = url, long_prompt, rng
        self.statuses: collections.Counter[tuple[str, int]] = collections.Counter()

    async def one(self, client: httpx.AsyncClient) -> None:
        kind = self.rng.choice(["stream", "stream", "disconnect", "bad", "bad", "fanout", "long"])
        try:
            status = await getattr(self, f"_{kind}")(client)
        except httpx.HTTPError as exc:
            status = -1
            print(f"transport error on {kind}: {type(exc).__name__}: {exc}", file=sys.stderr)
        self.statuses[(kind, status)] += 1

    async def _stream(self, client: httpx.AsyncClient) -> int:
        body = {"messages": [{"role": "user", "content": f"Tell me about {self.rng.randint(0, 999)}."}],
                "max_tokens": 32, "stream": True, "temperature": 0.8}
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for _ in response.aiter_lines():
                pass
            return response.status_code

    async def _disconnect(self, client: httpx.AsyncClient) -> int:
        body = {"prompt": "Write a long story about the sea.", "max_tokens": 200, "ignore_eos": True, "stream": True}
        async with client.stream("POST", "/v1/completions", json=body) as response:
            seen = 0
            async for line in response.aiter_lines():
                seen += line.startswith("data: ")
                if seen >= 3:
                    break  # hang up mid-stream
            return response.status_code

    async def _fanout(self, client: httpx.AsyncClient) -> int:
        body = {"prompt": "List three colours:", "max_tokens": 16, "n": 4, "temperature": 1.0}
        return (await client.post("/v1/completions", json=body)).status_code

    async def _long(self, client: httpx.AsyncClient) -> int:
        return (await client.post("/v1/completions", json={"prompt": self.long_prompt, "max_tokens": 8})).status_code

    async def _bad(self, client: httpx.AsyncClient) -> int:
        json_headers = {"Content-Type": "application/json"}
        bad = self.rng.choice([
            ("content", _SURROGATE_BODY),
            ("content", "{not json"),
            ("json", {"messages": [{"role": "wizard", "content": "hi"}]}),
            ("json", {"prompt": "hi", "n": 1000}),
            ("json", {"prompt": "hi", "stop": "x" * 100_000}),
            ("json", {"prompt": "word " * 300_000}),  # over the 1 MiB body limit this script sets
            ("json", {"messages": [{"role": "user", "content": "hi"}],
                      "chat_template_kwargs": {"chat_template": "{% for i in range(99999) %}{% endfor %}"}}),
            ("json", {"prompt": "hi", "max_tokens": True}),
        ])
        if bad[0] == "content":
            response = await client.post("/v1/chat/completions", content=bad[1].encode(), headers=json_headers)
        else:
            path = "/v1/chat/completions" if "messages" in bad[1] else "/v1/completions"
            response = await client.post(path, json=bad[1])
        return response.status_code


async def _traffic(soak: Soak, duration: float, concurrency: int, pid: int, timeline: list[int]) -> int:
    """Run the mix for `duration` s; appends the server's RSS (KiB) to `timeline` every 15 s."""
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=concurrency)

    async def sample() -> None:
        while time.monotonic() < deadline:
            timeline.append(_rss_kib(pid))
            await asyncio.sleep(15)

    async def worker(client: httpx.AsyncClient) -> int:
        done = 0
        while time.monotonic() < deadline:
            await soak.one(client)
            done += 1
        return done

    async with httpx.AsyncClient(base_url=soak.url, timeout=300, limits=limits) as client:
        sampler = asyncio.ensure_future(sample())
        counts = await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        sampler.cancel()
        return sum(counts)


def _wait_idle(url: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(url + "/metrics", timeout=30).text
        idle = (_metric(text, "tokenmill:num_requests_running") == 0
                and _metric(text, "tokenmill:num_requests_waiting") == 0
                and _metric(text, "tokenmill:kv_cache_free_blocks") == _metric(text, "tokenmill:kv_cache_total_blocks"))
        if idle or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def _start_server(port: int, extra: list[str]) -> subprocess.Popen:
    args = [sys.executable, "-c", _SERVER, "serve", "--port", str(port), "--log-level", "warning",
            "--max-model-len", "2048", "--max-request-body-bytes", str(1 << 20), "--kv-cache-memory", "256MiB",
            *extra]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    for _ in range(1200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit("the server exited during start-up")
        time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not become healthy")


def _report(soak: Soak, served: int, duration: float, pid: int, baseline: int, end_text: str,
            margin: float, timeline: list[int]) -> bool:
    by_status = collections.Counter()
    for (kind, status), count in sorted(soak.statuses.items()):
        print(f"  {kind:>10} -> {status}: {count}")
        by_status[status] += count
    peak, end = _rss_kib(pid, "VmHWM"), _rss_kib(pid)
    free = _metric(end_text, "tokenmill:kv_cache_free_blocks")
    total = _metric(end_text, "tokenmill:kv_cache_total_blocks")
    print(f"requests: {served} in {duration:.0f} s; by status: {dict(sorted(by_status.items()))}")
    print(f"RSS: baseline {baseline / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB ({peak / baseline:.2f}x), "
          f"end {end / 1024:.0f} MiB ({end / baseline:.2f}x baseline; allowed {1 + margin:.2f}x)")
    print("RSS every 15 s during the soak (MiB): " + " ".join(f"{kib / 1024:.0f}" for kib in timeline))
    print(f"KV blocks free at the end: {free:.0f} / {total:.0f}")
    server_errors = sum(count for status, count in by_status.items() if status >= 500 or status < 0)
    ok = server_errors == 0 and free == total and end <= baseline * (1 + margin)
    print("PASS" if ok else f"FAIL ({server_errors} 5xx/transport errors, {total - free:.0f} blocks in use)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--rss-margin", type=float, default=0.15, help="allowed end RSS growth over the baseline")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="seconds of the same mix before the baseline RSS is read (allocator pools fill up)")
    parser.add_argument("serve_args", nargs="*", help="extra `tokenmill serve` flags (after --)")
    args = parser.parse_args()
    server = _start_server(args.port, args.serve_args)
    url = f"http://127.0.0.1:{args.port}"
    try:
        soak = Soak(url, "The quick brown fox jumps over the lazy dog. " * 160, random.Random(args.seed))
        asyncio.run(_traffic(soak, args.warmup, args.concurrency, server.pid, []))  # warm-up: pools, caches
        _wait_idle(url)
        baseline = _rss_kib(server.pid)
        with open(f"/proc/{server.pid}/clear_refs", "w") as refs:
            refs.write("5")  # reset the peak (VmHWM) so it covers the soak, not the model load
        soak.statuses.clear()
        start = time.monotonic()
        timeline: list[int] = []
        served = asyncio.run(_traffic(soak, args.duration, args.concurrency, server.pid, timeline))
        elapsed = time.monotonic() - start
        end_text = _wait_idle(url)
        time.sleep(2)  # let freed request state be collected before the last RSS reading
        ok = _report(soak, served, elapsed, server.pid, baseline, end_text, args.rss_margin, timeline)
    finally:
        server.terminate()
        server.wait(60)
    print(json.dumps({"cpu": os.cpu_count()}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
