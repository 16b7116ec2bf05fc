"""LLM: the offline API, named and shaped like vLLM's so code can switch without relearning."""

from __future__ import annotations

import time
from typing import Any, Sequence

from tqdm import tqdm

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.errors import RequestError
from tokenmill.outputs import RequestOutput
from tokenmill.sampling.params import SamplingParams

PromptLike = str | list[int] | dict[str, Any]


class LLM:
    """Generate from a batch of prompts with continuous batching on the best available platform.

    `model` is a Hugging Face directory or a .gguf file; None uses the embedded SmolLM2 default.
    Other keyword arguments are EngineArgs fields (dtype, device, block_size, kv_cache_memory,
    enable_prefix_caching, max_num_batched_tokens, max_num_seqs, max_model_len, seed, ...).
    Differences from vLLM: there is no `tensor_parallel_size` yet, and prompts may be plain
    token-id lists as well as strings and {"prompt_token_ids": [...]} dicts.
    """

    def __init__(self, model: str | None = None, **engine_kwargs: Any) -> None:
        self.engine = EngineCore(EngineArgs(model=model, **engine_kwargs))
        self._next_id = 0

    def get_tokenizer(self) -> Any:
        return self.engine.tokenizer

    def generate(self, prompts: PromptLike | Sequence[PromptLike],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 *, use_tqdm: bool = True, priority: Sequence[int] | None = None) -> list[RequestOutput]:
        """One finished RequestOutput per prompt, in prompt order.

        A bad prompt or parameter raises RequestError before anything runs, and the engine keeps
        nothing of this call.
        """
        items = _as_list(prompts)
        params = _params_per_prompt(sampling_params, len(items))
        ids = self._add_all(items, params, priority)
        return self._run(ids, use_tqdm)

    def chat(self, messages: list[dict[str, Any]] | list[list[dict[str, Any]]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None, *, use_tqdm: bool = True,
             add_generation_prompt: bool = True, chat_template: str | None = None) -> list[RequestOutput]:
        """Render each conversation with the model's chat template, then generate as `generate` does."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        prompts = [{"prompt_token_ids": self.engine.apply_chat_template(c, add_generation_prompt, chat_template)}
                   for c in conversations]
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm)

    def _add_all(self, items: list[PromptLike], params: list[SamplingParams], priority: Sequence[int] | None) -> list[str]:
        added: list[str] = []
        try:
            for i, (item, p) in enumerate(zip(items, params)):
                request_id = str(self._next_id)
                self._next_id += 1
                prompt = item["prompt_token_ids"] if isinstance(item, dict) else item
                self.engine.add_request(request_id, prompt, p, priority=priority[i] if priority else 0,
                                        final_only=True)
                added.append(request_id)
        except Exception:
            for request_id in added:
                self.engine.abort_request(request_id)
            raise
        return added

    def _run(self, ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        finished: dict[str, RequestOutput] = {}
        bar = tqdm(total=len(ids), desc="generating", unit="req", disable=not use_tqdm, dynamic_ncols=True)
        start, out_tokens = time.perf_counter(), 0
        with bar:
            while len(finished) < len(ids):
                for output in self.engine.step():
                    if output.finished:
                        finished[output.request_id] = output
                        out_tokens += sum(len(c.token_ids) for c in output.outputs)
                        bar.update(1)
                        bar.set_postfix(tok_s=f"{out_tokens / max(time.perf_counter() - start, 1e-9):.1f}")
        return [finished[i] for i in ids]


def _as_list(prompts: PromptLike | Sequence[PromptLike]) -> list[PromptLike]:
    if isinstance(prompts, (str, dict)):
        return [prompts]
    items = list(prompts)
    if items and isinstance(items[0], int):
        return [items]  # one prompt given as token ids
    return items


def _params_per_prompt(params: SamplingParams | Sequence[SamplingParams] | None, count: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams() for _ in range(count)]
    if isinstance(params, SamplingParams):
        return [params] * count
    params = list(params)
    if len(params) != count:
        raise RequestError(f"got {len(params)} sampling_params for {count} prompts; pass one, or one per prompt")
    return params

