"""`tokenmill bench serve`: load-test a running OpenAI-compatible server, as vLLM's serving benchmark."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="load-test a running server (tokenmill serve, or any OpenAI API)")
    p.add_argument("--base-url", default=None, help="server URL (default: http://HOST:PORT)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--endpoint", default="/v1/completions", choices=("/v1/completions", "/v1/chat/completions"))
    p.add_argument("--model", default=None, help="model name to request (default: the server's first)")
    p.add_argument("--api-key", default=os.environ.get("TOKENMILL_API_KEY") or os.environ.get("OPENAI_API_KEY"))
    p.add_argument("--dataset-name", default="random", choices=("random", "sharegpt"))
    p.add_argument("--dataset-path", default=None, help="ShareGPT-format JSON (for --dataset-name sharegpt)")
    p.add_argument("--num-prompts", type=int, default=200)
    p.add_argument("--random-input-len", type=int, default=128)
    p.add_argument("--random-output-len", type=int, default=128)
    p.add_argument("--random-range-ratio", type=float, default=0.0, help="lengths vary within +/- this fraction")
    p.add_argument("--random-vocab-size", type=int, default=32000, help="random token ids are drawn below this")
    p.add_argument("--sharegpt-output-len", type=int, default=None, help="fixed output length for ShareGPT")
    p.add_argument("--request-rate", type=float, default=math.inf,
                   help="requests/s of a Poisson arrival process (default: inf, all at once)")
    p.add_argument("--max-concurrency", type=int, default=None, help="most requests in flight at once")
    p.add_argument("--ignore-eos", action="store_true", help="generate the full output length (always on for random)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-json", default=None, help="save the figures and per-request timings here")
    p.add_argument("--plot", default=None, help="save latency histograms to this PNG (needs matplotlib)")


def run(args: argparse.Namespace) -> int:
    from tokenmill.bench.serve_report import format_summary
    from tokenmill.errors import TokenmillError

    if args.dataset_name == "sharegpt" and not args.dataset_path:
        raise TokenmillError("--dataset-name sharegpt needs --dataset-path FILE.json")
    if args.request_rate <= 0:
        raise TokenmillError(f"--request-rate must be positive or inf, got {args.request_rate}")
    figures, results = asyncio.run(_benchmark(args))
    print(format_summary(figures))
    if args.output_json:
        _save(args.output_json, figures, results)
    if args.plot:
        from tokenmill.bench.serve_plot import plot_distributions

        plot_distributions(results, args.plot, f"tokenmill bench serve, rate {args.request_rate}")
    return 0 if figures["successful_requests"] else 1


async def _benchmark(args: argparse.Namespace) -> tuple[dict[str, Any], list]:
    from tokenmill.bench.serve_dataset import random_requests, sharegpt_requests
    from tokenmill.bench.serve_metrics import summarize
    from tokenmill.bench.serve_runner import ServeBenchConfig, count_tokens, new_client, run_requests

    cfg = ServeBenchConfig(base_url=(args.base_url or f"http://{args.host}:{args.port}").rstrip("/"),
                           endpoint=args.endpoint, model=args.model, api_key=args.api_key,
                           request_rate=args.request_rate, max_concurrency=args.max_concurrency, seed=args.seed,
                           ignore_eos=args.ignore_eos or args.dataset_name == "random", temperature=args.temperature)
    async with new_client() as client:
        if args.dataset_name == "random":
            requests = random_requests(args.num_prompts, args.random_input_len, args.random_output_len,
                                       vocab_size=args.random_vocab_size, seed=args.seed,
                                       range_ratio=args.random_range_ratio)
            if args.endpoint.endswith("/chat/completions"):
                requests = await _as_text(client, cfg, requests)
        else:
            requests = await sharegpt_requests(args.dataset_path, args.num_prompts,
                                               lambda text: count_tokens(client, cfg, text), seed=args.seed,
                                               output_len=args.sharegpt_output_len)
        results, duration = await run_requests(cfg, requests, client)
    # JSON has no infinity: an unlimited rate (all requests at once) is null, as is no concurrency cap
    head = {"base_url": cfg.base_url, "endpoint": cfg.endpoint, "dataset": args.dataset_name,
            "num_prompts": len(requests), "request_rate": args.request_rate if math.isfinite(args.request_rate)
            else None, "max_concurrency": args.max_concurrency}
    return {**head, **summarize(results, duration)}, results


async def _as_text(client: Any, cfg: Any, requests: list) -> list:
    """Chat needs text: decode each random prompt with the server's /detokenize."""
    for request in requests:
        response = await client.post(cfg.base_url + "/detokenize", json={"tokens": request.prompt},
                                     headers=cfg.headers)
        response.raise_for_status()
        request.prompt = response.json()["prompt"]
    return requests


def _save(path: str, figures: dict[str, Any], results: list) -> None:
    detail = {
        "ttfts_s": [r.ttft for r in results if r.success],
        "latencies_s": [r.latency for r in results if r.success],
        "output_lens": [r.output_len for r in results if r.success],
        "itls_s": [r.itl for r in results if r.success],
        "errors": [r.error for r in results if not r.success],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**figures, **detail}, f, indent=2, allow_nan=False)
