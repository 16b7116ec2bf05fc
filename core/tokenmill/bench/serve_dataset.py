"""Requests for `tokenmill bench serve`: random token prompts, or ShareGPT conversations (as vLLM's)."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tokenmill.bench.workload import random_workload
from tokenmill.errors import TokenmillError

# ShareGPT filters, as vLLM's benchmark applies them.
_MIN_LEN, _MAX_PROMPT_LEN, _MAX_TOTAL_LEN = 4, 1024, 2048


@dataclass(slots=True)
class ServeRequest:
    """One benchmark request: its prompt (text or token ids) and the tokens it must produce."""

    prompt: str | list[int]
    prompt_len: int
    output_len: int


def random_requests(num: int, input_len: int, output_len: int, *, vocab_size: int, seed: int = 0,
                    range_ratio: float = 0.0) -> list[ServeRequest]:
    """Prompts of random token ids, sent as ids so their length is exact."""
    workload = random_workload(num, input_len, output_len, vocab_size, seed=seed, range_ratio=range_ratio)
    return [ServeRequest(p, len(p), n) for p, n in zip(workload.prompts, workload.output_lens)]


def _load_pairs(path: str) -> list[tuple[str, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise TokenmillError(f"cannot read the ShareGPT file {path!r}: {exc}") from exc
    pairs = []
    for entry in data if isinstance(data, list) else []:
        turns = entry.get("conversations") or entry.get("conversation") or []
        if len(turns) >= 2 and all(isinstance(t.get("value"), str) for t in turns[:2]):
            pairs.append((turns[0]["value"], turns[1]["value"]))
    if not pairs:
        raise TokenmillError(f"{path!r} holds no ShareGPT conversations (a JSON list of "
                             "{\"conversations\": [{\"from\": ..., \"value\": ...}, ...]})")
    return pairs


async def sharegpt_requests(path: str, num: int, count_tokens: Callable[[str], Awaitable[int]], *, seed: int = 0,
                            output_len: int | None = None) -> list[ServeRequest]:
    """`num` first-turn prompts of a ShareGPT file; the reply's length is the output length.

    `count_tokens` measures a text with the served model's tokenizer (the server's /tokenize).
    """
    pairs = _load_pairs(path)
    random.Random(seed).shuffle(pairs)
    requests: list[ServeRequest] = []
    for prompt, reply in pairs:
        if len(requests) == num:
            break
        prompt_len = await count_tokens(prompt)
        out_len = output_len or await count_tokens(reply)
        if prompt_len < _MIN_LEN or out_len < _MIN_LEN:
            continue
        if prompt_len > _MAX_PROMPT_LEN or prompt_len + out_len > _MAX_TOTAL_LEN:
            continue
        requests.append(ServeRequest(prompt, prompt_len, out_len))
    if len(requests) < num:
        raise TokenmillError(f"{path!r} has only {len(requests)} usable conversations; lower --num-prompts")
    return requests
