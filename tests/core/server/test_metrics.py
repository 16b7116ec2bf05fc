"""/metrics parses as Prometheus text, carries the tokenmill: names, and its counters move."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

EXPECTED = {
    "tokenmill:num_requests_running", "tokenmill:num_requests_waiting", "tokenmill:kv_cache_usage_perc",
    "tokenmill:prefix_cache_queries", "tokenmill:prefix_cache_hits", "tokenmill:prompt_tokens",
    "tokenmill:generation_tokens", "tokenmill:time_to_first_token_seconds", "tokenmill:inter_token_latency_seconds",
    "tokenmill:e2e_request_latency_seconds",
}


def test_metrics_parse_and_name_every_family(live_server):
    response = httpx.get(live_server.url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert EXPECTED <= names


def test_counters_and_histograms_move_with_a_request(live_server):
    before = live_server.wait_idle()
    prompt = "A shared prefix that is long enough to fill at least one whole KV block of sixteen tokens, surely."
    n_prompt = len(live_server.core.tokenizer(prompt).input_ids)
    for _ in range(2):  # the second run hits the prefix cache
        out = live_server.client().completions.create(model=live_server.model, prompt=prompt, max_tokens=5,
                                                      temperature=0, extra_body={"ignore_eos": True})
    after = live_server.wait_idle()

    def delta(name):
        return after[name] - before.get(name, 0.0)

    assert delta("tokenmill:prompt_tokens_total") == 2 * n_prompt
    assert delta("tokenmill:generation_tokens_total") == 2 * out.usage.completion_tokens == 10
    assert delta("tokenmill:prefix_cache_queries_total") >= n_prompt
    assert delta("tokenmill:prefix_cache_hits_total") >= 16
    assert delta("tokenmill:time_to_first_token_seconds_count") == 2
    assert delta("tokenmill:inter_token_latency_seconds_count") == 2 * 4
    assert delta("tokenmill:e2e_request_latency_seconds_count") == 2
    assert delta("tokenmill:request_success_total{finished_reason=length}") == 2
    assert after["tokenmill:kv_cache_usage_perc"] == 0.0


def test_error_counter_moves(live_server):
    before = live_server.metrics().get("tokenmill:request_errors_total{status=404}", 0.0)
    httpx.post(live_server.url + "/v1/completions", json={"model": "nope", "prompt": "x"}, headers=live_server.headers)
    assert live_server.metrics()["tokenmill:request_errors_total{status=404}"] == before + 1
