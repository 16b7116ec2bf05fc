"""`tokenmill bench serve` against the live test server: random and ShareGPT datasets, JSON output."""

from __future__ import annotations

import argparse
import json

from tokenmill.cli import bench_serve


def _args(live_server, tmp_path, *extra):
    parser = argparse.ArgumentParser()
    bench_serve.add_parser(parser.add_subparsers(dest="kind"))
    return parser.parse_args(["serve", "--base-url", live_server.url, "--api-key", live_server.api_key,
                              "--output-json", str(tmp_path / "result.json"), *extra])


def test_random_dataset_at_a_poisson_rate(live_server, tmp_path, capsys):
    args = _args(live_server, tmp_path, "--num-prompts", "4", "--random-input-len", "16", "--random-output-len",
                 "4", "--request-rate", "20", "--max-concurrency", "2")
    assert bench_serve.run(args) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["successful_requests"] == 4 and result["failed_requests"] == 0
    assert result["total_input_tokens"] == 4 * 16 and result["total_output_tokens"] == 4 * 4
    assert all(len(gaps) <= 3 for gaps in result["itls_s"])  # 4 tokens: at most 3 gaps after the first
    assert 0 < result["median_ttft_ms"] <= result["median_e2el_ms"]
    assert result["output_throughput"] == result["total_output_tokens"] / result["duration_s"]
    for name in ("ttft", "tpot", "itl", "e2el"):
        assert result[f"mean_{name}_ms"] >= 0 and result[f"p99_{name}_ms"] >= result[f"median_{name}_ms"]
    out = capsys.readouterr().out
    assert "Request throughput (req/s):" in out and "Time to First Token" in out
    assert result["request_rate"] == 20.0 and result["max_concurrency"] == 2


def test_sharegpt_dataset_through_chat(live_server, tmp_path):
    data = [{"conversations": [{"from": "human", "value": f"Question number {i}: what is {i} plus {i}?"},
                               {"from": "gpt", "value": f"The answer to that question is {2 * i}, of course."}]}
            for i in range(3)]
    data.append({"conversations": [{"from": "human", "value": "too short"}]})  # one turn: skipped
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(data))
    args = _args(live_server, tmp_path, "--dataset-name", "sharegpt", "--dataset-path", str(path),
                 "--num-prompts", "2", "--sharegpt-output-len", "4", "--endpoint", "/v1/chat/completions",
                 "--ignore-eos")
    assert bench_serve.run(args) == 0
    raw = (tmp_path / "result.json").read_text()
    result = json.loads(raw)
    assert result["successful_requests"] == 2 and result["total_output_tokens"] == 8
    assert result["request_rate"] is None and result["max_concurrency"] is None  # all at once, no cap
    assert '"inf"' not in raw and '"None"' not in raw
    tokenizer = live_server.core.tokenizer
    lens = sorted(len(tokenizer(d["conversations"][0]["value"]).input_ids) for d in data[:3])
    assert lens[0] * 2 <= result["total_input_tokens"] <= lens[-1] * 2


def test_clients_probe_before_a_common_start_and_time_each_status_line(live_server):
    import asyncio
    import time

    from tokenmill.bench.serve_dataset import ServeRequest
    from tokenmill.bench.serve_runner import ServeBenchConfig, new_client, probe_server, run_requests

    cfg = ServeBenchConfig(base_url=live_server.url, api_key=live_server.api_key,
                           ignore_eos=True, temperature=0.0)
    requests = [ServeRequest([5, 6, 7, 8 + i], 4, 3) for i in range(3)]

    async def go():
        async with new_client() as client:
            model = await probe_server(cfg, requests[0], client)
            counters = live_server.wait_idle()
            before = time.time()
            results, _ = await run_requests(cfg, requests, client, model)
            return model, counters, before, results, time.time()

    model, counters, before, results, after = asyncio.run(go())
    assert model and len(results) == 3 and all(r.success and r.output_len == 3 for r in results)
    name = "tokenmill:generation_tokens_total"
    generated = live_server.wait_idle()[name] - counters[name]
    assert generated == 3 * 3, "given the probed model, run_requests sends only its requests (no second probe)"
    for r in results:
        assert before <= r.sent_at <= after
        assert 0 < r.headers <= r.latency and r.ttft <= r.latency
