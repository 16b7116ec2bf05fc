"""The static-shape example plugin: bucketed steps only, one sync per step, and the CPU plugin's greedy tokens."""

from __future__ import annotations

import pytest

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.plugin_manager import load_plugins
from tokenmill.sampling import SamplingParams

toy = pytest.importorskip("tokenmill_static_toy", reason="install it: pip install -e tests/static_toy_plugin")

MiB = 1 << 20
PROMPTS = ["What is the capital of France?", "Hi",
           "Explain gravity to a child in two sentences, then give an example with an apple."]


@pytest.fixture(scope="module")
def engines():
    """One engine per device over the default model, shared by the tests (loading is the slow part)."""
    manager = load_plugins()
    made = {}

    def get(device: str) -> EngineCore:
        if device not in made:
            args = EngineArgs(device=device, dtype="float32", kv_cache_memory=64 * MiB, max_num_batched_tokens=48,
                              max_num_seqs=8)
            made[device] = EngineCore(args, plugins=manager)
        return made[device]

    return get


def _generate(engines, device: str, params: SamplingParams) -> list[list[int]]:
    engine = engines(device)
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(str(i), engine.apply_chat_template([{"role": "user", "content": prompt}]), params)
    final = {}
    while engine.has_unfinished_requests():
        final.update({o.request_id: o for o in engine.step() if o.finished})
    return [final[str(i)].outputs[0].token_ids for i in range(len(PROMPTS))]


def test_greedy_tokens_equal_the_cpu_plugin_with_chunked_mixed_steps(engines):
    toy.RECORDER.reset()
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    tokens = _generate(engines, "static_toy", greedy)
    assert tokens == _generate(engines, "cpu", greedy)
    assert toy.RECORDER.steps > 0 and toy.RECORDER.syncs == toy.RECORDER.steps, "one sync point per step"


def test_every_step_shape_is_a_declared_bucket(engines):
    toy.RECORDER.reset()
    _generate(engines, "static_toy", SamplingParams(temperature=0.8, top_k=40, seed=3, max_tokens=8))
    limits = {"max_num_batched_tokens": 48, "max_num_seqs": 8, "max_blocks_per_seq": 8192 // 16}
    buckets = toy.tokenmill_shape_buckets(platform=None, limits=limits)
    for tokens, reqs, width in toy.RECORDER.batch_shapes:
        assert reqs in buckets.batch_sizes and width in buckets.block_table_widths
        assert tokens in buckets.token_counts or tokens == reqs  # a pure decode pads T to its batch bucket
    assert toy.RECORDER.step_tokens == {t for t, _, _ in toy.RECORDER.batch_shapes}
    assert len(toy.RECORDER.batch_shapes) <= buckets.num_shapes()


def test_seeded_sampling_repeats_on_the_static_path(engines):
    params = SamplingParams(temperature=0.9, top_p=0.9, seed=11, max_tokens=6)
    assert _generate(engines, "static_toy", params) == _generate(engines, "static_toy", params)
