"""Sliding-window attention end to end: the real engine frees KV blocks behind the window, and
still generates exactly what transformers does on prompts far longer than the window."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tiny_models import CONFIGS, write_tiny_model
from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.loaders import load_model_bundle
from tokenmill.sampling.params import SamplingParams

BLOCK = 16
PROMPT_LEN, NEW = 40, 48  # 88 tokens: 6 blocks without a window; mistral's window is 12 keys


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("windowed")
    return {family: write_tiny_model(family, root / family, seed=3) for family in ("mistral", "gemma2")}


def _engine(path, cpu, **kwargs) -> EngineCore:
    plugins, _ = cpu
    args = EngineArgs(model=str(path), dtype="float32", device="cpu", block_size=BLOCK,
                      kv_cache_memory=4 << 20, enable_prefix_caching=False, **kwargs)
    return EngineCore(args, plugins=plugins)


def _prompt() -> list[int]:
    return torch.randint(0, 256, (PROMPT_LEN,), generator=torch.Generator().manual_seed(5)).tolist()


def _run(engine: EngineCore, prompt: list[int]) -> tuple[list[int], list[int]]:
    """(generated ids, blocks the request held after each step), greedy."""
    engine.add_request("r", prompt, SamplingParams(temperature=0.0, max_tokens=NEW, ignore_eos=True))
    held, tokens = [], []
    while engine.has_unfinished_requests():
        for out in engine.step():
            tokens = list(out.outputs[0].token_ids)
        held.append(engine.kv.num_used_blocks)
    return tokens, held


def _hf_greedy(path, prompt: list[int]) -> list[int]:
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    config = hf.generation_config
    config.eos_token_id, config.pad_token_id, config.do_sample, config.max_new_tokens = None, 0, False, NEW
    ids = torch.tensor([prompt])
    with torch.no_grad():
        return hf.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)[0, PROMPT_LEN:].tolist()


def test_blocks_behind_the_window_are_freed_and_output_matches(dirs, cpu):
    engine = _engine(dirs["mistral"], cpu)
    assert engine.kv.sliding_window == CONFIGS["mistral"].sliding_window == 12
    assert engine.max_model_len == CONFIGS["mistral"].max_position_embeddings  # no longer capped at the window
    tokens, held = _run(engine, _prompt())
    # the prefill holds all 3 prompt blocks; afterwards a decode at position p keeps blocks from
    # (p - 11) // 16 on, so at most 2 blocks (3 around the prefill), where full attention ends on 6
    assert held[0] == 3 and max(held[1:]) <= 2, held
    assert engine.kv.num_free_blocks == engine.kv.num_blocks  # and every block comes back at the end
    assert tokens == _hf_greedy(dirs["mistral"], _prompt())


def test_a_global_layer_keeps_every_block(dirs, cpu):
    engine = _engine(dirs["gemma2"], cpu)  # layer 1 attends to everything: nothing may be freed
    assert engine.kv.sliding_window is None
    tokens, held = _run(engine, _prompt())
    assert held[-2] == -(-(PROMPT_LEN + NEW - 1) // BLOCK)
    assert tokens == _hf_greedy(dirs["gemma2"], _prompt())


def test_windowed_layers_get_windowed_backends(dirs, cpu):
    plugins, platform = cpu
    bundle = load_model_bundle(str(dirs["gemma2"]), platform=platform, plugins=plugins, dtype="float32")
    windows = [layer.self_attn._backend.spec.sliding_window for layer in bundle.model.model.layers]
    assert windows == [8, None] and bundle.kv_window is None
    assert bundle.attn_spec.sliding_window is None and bundle.attn_spec.logits_soft_cap == 5.0
    # a window no shorter than the context masks nothing: the layer shares the base backend
    short = load_model_bundle(str(dirs["gemma2"]), platform=platform, plugins=plugins, dtype="float32", max_model_len=8)
    assert all(layer.self_attn._backend is short.attn_backend for layer in short.model.model.layers)


def test_full_attention_would_differ(dirs, cpu):
    """The equivalence above can fail: the same weights without the window give other logits."""
    plugins, platform = cpu
    bundle = load_model_bundle(str(dirs["mistral"]), platform=platform, plugins=plugins, dtype="float32")
    from harness import run_greedy

    windowed = run_greedy(bundle, plugins, platform, [_prompt()], 2).logits[0]
    for layer in bundle.model.model.layers:
        layer.self_attn._backend = bundle.attn_backend  # the unwindowed base backend
    full = run_greedy(bundle, plugins, platform, [_prompt()], 2).logits[0]
    assert torch.allclose(windowed[:12], full[:12], atol=1e-5)  # inside the window: the same
    assert (windowed[12:] - full[12:]).abs().max() > 1e-2


def test_a_backend_without_windows_caps_the_context_or_is_refused(dirs):
    """static_toy's backend declares neither window nor soft-cap support: the core caps a windowed
    model's context at its window (exact there), refuses a longer one, and refuses soft-capping."""
    from tokenmill.errors import ModelLoadError, TokenmillError
    from tokenmill.plugin_manager import load_plugins

    plugins = load_plugins()
    platform = plugins.select("static_toy")
    bundle = load_model_bundle(str(dirs["mistral"]), platform=platform, plugins=plugins, dtype="float32")
    assert bundle.max_model_len == 12 and bundle.kv_window is None
    assert all(layer.self_attn._backend is bundle.attn_backend for layer in bundle.model.model.layers)
    with pytest.raises(TokenmillError, match=r"does not support sliding-window attention.*--max-model-len 12 or less"):
        load_model_bundle(str(dirs["mistral"]), platform=platform, plugins=plugins, dtype="float32", max_model_len=64)
    with pytest.raises(ModelLoadError, match="soft-capping"):
        load_model_bundle(str(dirs["gemma2"]), platform=platform, plugins=plugins, dtype="float32")
