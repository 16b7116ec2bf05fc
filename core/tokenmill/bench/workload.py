"""Benchmark workloads: the fixed chat workload file, or random token prompts of given lengths."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass


@dataclass(slots=True)
class Workload:
    """Prompts as token ids, with the number of new tokens each must produce."""

    prompts: list[list[int]]
    output_lens: list[int]

    @property
    def num_prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


def chat_workload(path: str, section: str, tokenizer, output_len: int | None = None) -> Workload:
    """Section "batch" or "single" of a workload JSON: user messages through the chat template."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)[section]
    messages = data["prompts"] if "prompts" in data else [data["prompt"]]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": m}], add_generation_prompt=True, tokenize=True)
        for m in messages
    ]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompts]
    n = output_len or data["max_new_tokens"]
    return Workload(prompts, [n] * len(prompts))


def random_workload(num_prompts: int, input_len: int, output_len: int, vocab_size: int, seed: int = 0,
                    range_ratio: float = 0.0) -> Workload:
    """Random token ids; lengths drawn uniformly within +/- range_ratio of the given means."""
    rng = random.Random(seed)

    def draw(mean: int) -> int:
        return max(1, rng.randint(int(mean * (1 - range_ratio)), int(mean * (1 + range_ratio))))

    prompts = [[rng.randrange(100, vocab_size - 100) for _ in range(draw(input_len))] for _ in range(num_prompts)]
    return Workload(prompts, [draw(output_len) for _ in range(num_prompts)])
