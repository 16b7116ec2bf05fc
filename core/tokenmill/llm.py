"""LLM: the offline API, named and shaped like vLLM's so code can switch without relearning."""

from __future__ import annotations

import inspect
import time
from dataclasses import fields
from typing import Any, Sequence

from tqdm import tqdm

from tokenmill.config import EngineArgs
from tokenmill.engine.core import EngineCore
from tokenmill.errors import RequestError, TokenmillError
from tokenmill.loaders.generation_defaults import generation_defaults
from tokenmill.outputs import RequestOutput
from tokenmill.sampling.params import SamplingParams

PromptLike = str | list[int] | dict[str, Any]


class LLM:
    """Generate from a batch of prompts with continuous batching on the best available platform.

    :param model: a Hugging Face model directory, a .gguf file, or a Hub id (`org/name`, or
        `org/name/file.gguf`) looked up in the local HF cache, then downloaded where the network
        allows; None uses the embedded SmolLM2-135M-Instruct.
    :param tokenizer: a directory, .gguf or Hub id to take the tokenizer from (default: the model's).
    :param revision: the Hub branch, tag or commit of a Hub id (default: main).
    :param chat_template: a Jinja chat template, inline or a file path, replacing the model's.
    :param dtype: auto (the platform's preferred), float32, bfloat16, float16; half and float alias.
    :param quantization: auto (a GGUF's 4/8-bit layers stay packed), none (dense), int4 or int8.
    :param device: the plugin to run on (cpu, cuda, ...); default: $TOKENMILL_DEVICE or the best.
    :param block_size: tokens per KV-cache block (a power of two).
    :param kv_cache_memory: the KV pool's size in bytes or as text ("2GiB", "500MB").
    :param kv_cache_dtype: the KV cache's dtype: auto (the model's), float32, bfloat16, float16.
    :param gpu_memory_utilization: share of an accelerator's memory to use (default 0.9).
    :param enable_prefix_caching: reuse KV blocks of shared prompt prefixes.
    :param max_num_batched_tokens: the token budget of one engine step (None: the platform's default).
    :param max_num_seqs: the most sequences running at once (None: the platform's default).
    :param async_scheduling: schedule step n+1 while step n runs on the device (None: the
        platform's choice, on for CUDA; requests that need host state run synchronous steps).
    :param max_model_len: the context length (default: the model's own).
    :param seed: the engine's random seed.
    :param enforce_eager: never capture graphs or compile the model step.
    :param num_threads: CPU compute threads (default: torch's).
    :param tensor_parallel_size: split the model over this many devices (ranks), one process each.
    :param distributed_executor_backend: "mp" (spawned processes on this host, the default) or "ray".
    :param trust_remote_code: accepted for vLLM compatibility; no model code is ever run.

    Any other vLLM keyword raises a TokenmillError that names it and says why it is not supported.
    Prompts may be strings, {"prompt_token_ids": [...]} dicts, or plain token-id lists.
    """

    def __init__(self, model: str | None = None, *, tokenizer: str | None = None, revision: str | None = None,
                 chat_template: str | None = None, dtype: str = "auto", quantization: str = "auto",
                 device: str | None = None, block_size: int = 16, kv_cache_memory: int | str | None = None,
                 kv_cache_dtype: str = "auto", gpu_memory_utilization: float | None = None, enable_prefix_caching: bool = True,
                 max_num_batched_tokens: int | None = None, max_num_seqs: int | None = None, max_model_len: int | None = None,
                 async_scheduling: bool | None = None,
                 seed: int = 0, enforce_eager: bool = False, num_threads: int | None = None,
                 tensor_parallel_size: int = 1, distributed_executor_backend: str | None = None,
                 trust_remote_code: bool = False, **unsupported: Any) -> None:
        _refuse_unsupported(unsupported)
        options = {name: value for name, value in locals().items() if name in _ENGINE_FIELDS}  # the keywords
        if options["gpu_memory_utilization"] is None:
            del options["gpu_memory_utilization"]  # EngineArgs' default reads the environment
        self.engine = build_engine(EngineArgs(**options))
        self._next_id = 0

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams with the model's generation_config defaults (temperature, top_p, ...) applied."""
        return SamplingParams(**generation_defaults(self.engine.bundle.source))

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


_ENGINE_FIELDS = frozenset(f.name for f in fields(EngineArgs))
# vLLM keywords with no tokenmill counterpart, each with the reason a user needs.
VLLM_ONLY_KEYWORDS = {
    "pipeline_parallel_size": "pipeline parallelism is not built (docs/distributed.md says how it would fit); "
                              "use tensor_parallel_size=",
    "data_parallel_size": "run one engine per device behind a load balancer",
    "swap_space": "preempted requests are recomputed, never swapped to host memory",
    "cpu_offload_gb": "weights stay on the engine's device",
    "kv_cache_dtype": "the KV cache uses the model's dtype (set dtype=)",
    "enable_lora": "LoRA adapters are not supported",
    "max_loras": "LoRA adapters are not supported",
    "speculative_config": "speculative decoding is not supported",
    "tokenizer_mode": "tokenmill always uses the fast tokenizer (tokenizer.json)",
    "load_format": "the format follows the path: a directory is safetensors, a .gguf file is GGUF",
    "download_dir": "Hub downloads go to the Hugging Face cache; set HF_HOME or HF_HUB_CACHE",
    "tokenizer_revision": "the tokenizer comes from its main revision; pass a local directory as tokenizer=",
    "hf_overrides": "the model's config.json is read as it is",
    "compilation_config": "the platform plugin chooses graph capture; enforce_eager=True turns it off",
    "limit_mm_per_prompt": "only text models are supported",
    "task": "only text generation is supported",
}


def _refuse_unsupported(unsupported: dict[str, Any]) -> None:
    """One clear error for the first keyword LLM() does not take (never a bare TypeError)."""
    if not unsupported:
        return
    name = sorted(unsupported)[0]
    reason = VLLM_ONLY_KEYWORDS.get(name)
    if reason is not None:
        raise TokenmillError(f"LLM({name}=...) is a vLLM option tokenmill does not support: {reason}")
    accepted = ", ".join(p for p in inspect.signature(LLM.__init__).parameters if p not in ("self", "unsupported"))
    raise TokenmillError(f"LLM() got an unknown keyword {name!r}; it takes: {accepted}")


def build_engine(args: EngineArgs) -> EngineCore:
    """An EngineCore for `args` (the CLI's and LLM's one way to make an engine)."""
    return EngineCore(args)


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

