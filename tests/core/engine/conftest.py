"""Fixtures for engine tests: the embedded SmolLM2 model loaded once, in float32, on the CPU plugin."""

from __future__ import annotations

import pytest

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.loaders import load_model_bundle
from tokenmill.plugin_manager import load_plugins

MiB = 1 << 20


@pytest.fixture(scope="session")
def cpu_plugins():
    return load_plugins()


@pytest.fixture(scope="session")
def smol_bundle(cpu_plugins):
    platform = cpu_plugins.select("cpu")
    return load_model_bundle(None, platform=platform, plugins=cpu_plugins, dtype="float32", block_size=16)


@pytest.fixture(scope="session")
def make_engine(cpu_plugins, smol_bundle):
    """Build an engine over the shared weights; keyword arguments are EngineArgs fields."""

    def build(**kwargs) -> EngineCore:
        kwargs.setdefault("kv_cache_memory", 64 * MiB)
        args = EngineArgs(dtype="float32", device="cpu", **kwargs)
        return EngineCore(args, plugins=cpu_plugins, bundle=smol_bundle)

    return build


@pytest.fixture(scope="session")
def tools():
    """The plain helpers below, as a fixture so test modules need no imports of each other."""

    class Tools:
        chat_ids = staticmethod(chat_ids)
        run_all = staticmethod(run_all)
        greedy = staticmethod(greedy)
        prompts = PROMPTS

    return Tools


def chat_ids(engine: EngineCore, text: str) -> list[int]:
    """A user message rendered through the model's chat template."""
    return engine.apply_chat_template([{"role": "user", "content": text}])


def run_all(engine: EngineCore) -> dict:
    """Step until idle; the final RequestOutput of every request, by id."""
    final = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                assert out.request_id not in final, "a request finished twice"
                final[out.request_id] = out
    return final


def greedy(engine: EngineCore, prompts: list[str], params) -> list[list[int]]:
    """Each prompt (plain text, no chat template) run to completion under `params`; its token ids, in order."""
    for i, prompt in enumerate(prompts):
        engine.add_request(str(i), prompt, params)
    final = run_all(engine)
    return [final[str(i)].outputs[0].token_ids for i in range(len(prompts))]


PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Explain gravity to a child in two sentences.",
    "List three primary colours.",
    "Why is the sky blue?",
    "Give me a synonym for happy.",
    "What does a compiler do?",
    "Translate 'good morning' into Spanish.",
    "Name a famous painting and its painter.",
    "How many legs does a spider have?",
    "Suggest a name for a pet goldfish.",
    "What is photosynthesis?",
    "Tell me a fun fact about octopuses and their three hearts, and why they have blue blood.",
    "Summarise the plot of Romeo and Juliet in one sentence.",
    "What is 12 times 12?",
    "Describe the smell of fresh bread.",
]
