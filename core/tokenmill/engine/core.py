"""EngineCore: the inner loop. Each step schedules, runs the model, samples, updates and emits."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import torch

from tokenmill.config import EngineArgs
from tokenmill.detokenizer import IncrementalDetokenizer
from tokenmill.engine.deltas import StepDeltas, collect_deltas
from tokenmill.engine.inflight import InflightStep, needs_sync, resolve_async_scheduling, start_host_copy
from tokenmill.engine.kv_setup import allocate_pool
from tokenmill.engine.profile_run import profile_peak_activations
from tokenmill.engine.request_state import ParentState, SampleState, stop_reason_for
from tokenmill.engine.scheduler_limits import resolve_scheduler_limits
from tokenmill.engine.stats import EngineStats
from tokenmill.errors import RequestError, TokenmillError
from tokenmill.kv.kv_cache_manager import KVCacheManager
from tokenmill.loaders import ModelBundle, load_model_bundle
from tokenmill.loaders.default_model import DEFAULT_MODEL_NAME
from tokenmill.loaders.dtype import resolve_kv_cache_dtype
from tokenmill.ops import OpRegistry
from tokenmill.outputs import CompletionOutput, RequestOutput
from tokenmill.plugin_base import DefaultExecution
from tokenmill.plugin_manager import PluginManager, load_plugins
from tokenmill.sampling.logprobs import new_generator, position_logprobs
from tokenmill.sampling.params import SamplingParams
from tokenmill.sampling.sampler import Sampler, SamplingRow
from tokenmill.sampling.token_filters import build_filters
from tokenmill.structured.matcher import GrammarState
from tokenmill.sched.output import SchedulerOutput
from tokenmill.sched.request import Request
from tokenmill.sched.scheduler import Scheduler
from tokenmill.worker.model_runner import ModelRunner, RunnerOutput
from tokenmill.worker.runner_setup import build_runner

log = logging.getLogger(__name__)


class EngineCore:
    """Owns the scheduler, the model runner and the sampler; not thread-safe (AsyncEngine wraps it)."""

    def __init__(self, args: EngineArgs | None = None, plugins: PluginManager | None = None,
                 bundle: ModelBundle | None = None, *, detokenize: bool = True) -> None:
        """Load the model (or reuse `bundle`, a loaded model whose weights engines may share) and size the KV pool.

        `detokenize=False` (the engine-core process) leaves text, stop strings and logprob token
        texts to the API process: outputs then come from `step_deltas`, as token ids only.
        """
        self.args = args = args or EngineArgs()
        self.detokenize = detokenize
        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        torch.manual_seed(args.seed)
        self.plugins = plugins or load_plugins()
        self.platform = self.plugins.select(args.device)
        self.args = args = resolve_scheduler_limits(args, self.platform)  # unset limits: the platform's
        self.plugins.startup(self.platform, _startup_options(args))
        self.execution = self.plugins.execution_context(self.platform) or DefaultExecution()
        self.executor = self._start_executor(bundle)  # None: one device, the model runs in this process
        self.bundle = bundle or (self.executor.bundle if self.executor else None) or load_model_bundle(args.model, platform=self.platform, plugins=self.plugins,
                                                  dtype=args.dtype, block_size=args.block_size,
                                                  max_model_len=args.max_model_len,
                                                  quantization=args.quantization,
                                                  kv_cache_dtype=args.kv_cache_dtype, tokenizer=args.tokenizer,
                                                  revision=args.revision, chat_template=args.chat_template)
        spec = self.bundle.attn_spec
        if spec.block_size != args.block_size:
            raise TokenmillError(f"the shared model was loaded for block size {spec.block_size}, "
                                 f"not {args.block_size}; load it again or use the same --block-size")
        if resolve_kv_cache_dtype(args.kv_cache_dtype, spec.kv_cache_dtype, self.platform) != spec.kv_cache_dtype:
            raise TokenmillError(f"the shared model was loaded for a {spec.kv_cache_dtype} KV cache, not "
                                 f"{args.kv_cache_dtype}; load it again or use the same --kv-cache-dtype")
        self.tokenizer = self.bundle.tokenizer
        self.model_name = args.model or DEFAULT_MODEL_NAME
        pool = self._allocate_pool()
        self.max_model_len = pool.max_model_len
        self.num_blocks = pool.num_blocks
        self.kv = KVCacheManager(pool.num_blocks, args.block_size, args.enable_prefix_caching,
                                 sliding_window=getattr(self.bundle, "kv_window", None),  # all layers windowed
                                 null_block=pool.num_blocks if self.platform.static_shapes else 0)
        self.scheduler = Scheduler(self.kv, max_num_batched_tokens=args.max_num_batched_tokens,
                                   max_num_seqs=args.max_num_seqs, max_model_len=self.max_model_len)
        runner_class = ModelRunner if self.executor is None else self.executor.runner_class
        self.runner = build_runner(runner_class, self.plugins, self.platform, args, self.bundle, pool, self.execution,
                                   api_server_process=not detokenize)  # the engine-core process
        self.eos_ids = set(self.bundle.eos_token_ids)
        self.sampler = Sampler(list(self.eos_ids), ops=OpRegistry(self.plugins.op_overrides(self.platform)),
                               static=self.platform.static_shapes, sync=self.execution.sync)
        self._parents: dict[str, ParentState] = {}
        self._samples: dict[str, tuple[ParentState, SampleState]] = {}  # scheduler request id -> owners
        self._prompt_lp_ids: set[str] = set()  # scheduler ids whose prompt logprobs are still wanted
        self._token_text: dict[int, str] = {}  # token id -> its text alone, for logprob entries
        self._grammars = None  # the GrammarCompiler, made when the first constraint arrives
        self._grammar_lock = threading.Lock()
        self.async_scheduling = resolve_async_scheduling(args, self.platform)  # engine/inflight.py
        self._inflight: InflightStep | None = None  # the step launched but not yet read (async scheduling)
        self._counters = {"prompt": 0, "generated": 0, "computed": 0, "aborted": 0, "steps": 0, "preempted": 0}
        log.info("engine ready: model %s on %s, dtype %s, quantization %s; %d KV blocks of %d tokens "
                 "(%d tokens), max_model_len %d, max concurrency %.2fx at max_model_len",
                 self.model_name, self.platform.name, str(self.bundle.dtype).removeprefix("torch."),
                 ", ".join(f"{s} ({n} layers)" for s, n in self.bundle.packed_layers.items()) or "none (dense)",
                 pool.num_blocks, args.block_size, pool.num_blocks * args.block_size, self.max_model_len,
                 pool.num_blocks * args.block_size / self.max_model_len)

    def _start_executor(self, bundle: ModelBundle | None) -> Any:
        """Tensor parallelism: start the workers; this process becomes rank 0 (parallel/executor)."""
        if self.args.tensor_parallel_size == 1:
            return None
        if bundle is not None:
            raise TokenmillError("a shared, already loaded model cannot be split over ranks; "
                                 "load it inside a tensor-parallel engine instead")
        from tokenmill.parallel.executor import start_executor  # torch.distributed only when asked for

        return start_executor(self.args, self.plugins, self.platform)

    def _allocate_pool(self):
        """Profile the largest step where the allocator can, then size and allocate the KV pool."""
        args, bundle = self.args, self.bundle
        if self.executor is not None:  # every rank sized its pool, to the smallest budget among them
            self.allocator = self.executor.allocator
            return self.executor.pool
        self.allocator = allocator = self.plugins.kv_allocator(self.platform, 0, args.gpu_memory_utilization)
        with self.execution.guard():
            profile_peak_activations(allocator, bundle, args.max_num_batched_tokens, args.max_num_seqs,
                                     args.block_size)
        return allocate_pool(allocator, bundle.attn_backend, num_layers=bundle.arch.num_layers,
                             dtype=bundle.attn_spec.kv_cache_dtype, block_size=args.block_size,
                             requested_bytes=args.kv_cache_memory, max_model_len=bundle.max_model_len,
                             max_len_was_set=args.max_model_len is not None,
                             reserved_blocks=1 if self.platform.static_shapes else 0)

    # ------------------------------------------------------------------ requests

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        """Token ids of a prompt given as text or already as ids."""
        if isinstance(prompt, str):
            if not prompt:
                raise RequestError("the prompt is empty; send at least one character or token id")
            return self.tokenizer(prompt, add_special_tokens=True).input_ids
        ids = list(prompt)
        vocab = self.bundle.arch.vocab_size
        bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < vocab]
        if bad:
            raise RequestError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        return ids

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams | None = None,
                    *, priority: int = 0, final_only: bool = False) -> None:
        """Validate and queue a request; a bad one raises RequestError and changes nothing.

        `final_only` (vLLM's RequestOutputKind.FINAL_ONLY) makes `step` emit the request's output
        only once it has finished, which saves building a snapshot every step for offline use.
        """
        params = params or SamplingParams()
        if request_id in self._parents:
            raise RequestError(f"request id {request_id!r} is already in use; give each request a unique id")
        ids = self.tokenize(prompt)
        max_tokens = self._max_tokens(len(ids), params)
        compiled = None if params.structured_outputs is None else self.grammar_compiler().compile(params.structured_outputs)
        filters = build_filters(params, self.tokenizer, self.bundle.arch.vocab_size, self.bundle.device)
        parent = ParentState(request_id, prompt if isinstance(prompt, str) else None, ids, params,
                             final_only=final_only)
        if params.prompt_logprobs is not None:
            parent.prompt_logprobs = [None]
        requests = [self._new_sample(parent, i, max_tokens, priority, compiled, filters) for i in range(params.n)]
        try:
            for request in requests:
                self.scheduler.add_request(request)
        except Exception:
            self.scheduler.abort_requests([r.request_id for r in requests])  # leave nothing behind
            for request in requests:
                self._samples.pop(request.request_id, None)
            raise
        self._parents[request_id] = parent
        if params.prompt_logprobs is not None:
            self._prompt_lp_ids.add(requests[0].request_id)
        self._counters["prompt"] += len(ids) * params.n

    def _max_tokens(self, prompt_len: int, params: SamplingParams) -> int:
        if prompt_len == 0:
            raise RequestError("the prompt is empty; send at least one token")
        room = self.max_model_len - prompt_len
        if params.max_tokens is None:
            if room < 1:
                raise RequestError(f"the prompt has {prompt_len} tokens, which leaves no room to generate in the "
                                   f"model's context of {self.max_model_len} tokens; shorten the prompt")
            return room
        if params.max_tokens > room:
            raise RequestError(f"the prompt ({prompt_len} tokens) plus max_tokens ({params.max_tokens}) is "
                               f"{prompt_len + params.max_tokens} tokens, more than the model's context of "
                               f"{self.max_model_len}; shorten the prompt or lower max_tokens")
        return params.max_tokens

    def grammar_compiler(self, tokenizer: Any = None):
        """The engine's GrammarCompiler (xgrammar, cached), made on first use from `tokenizer` (default:
        the engine's; the server passes its own copy, as tokenizers are not thread-safe). The compiler
        is thread-safe: the server compiles a request's grammar on its own thread before submitting
        it, and add_request then finds it in the cache instead of compiling on the step loop."""
        with self._grammar_lock:
            if self._grammars is None:
                from tokenmill.structured.compiler import GrammarCompiler

                self._grammars = GrammarCompiler(tokenizer or self.tokenizer, self.bundle.arch.vocab_size,
                                                 sorted(self.eos_ids))
        return self._grammars

    def _new_sample(self, parent: ParentState, index: int, max_tokens: int, priority: int,
                    compiled: Any = None, filters: Any = None) -> Request:
        params = parent.params
        child_id = parent.request_id if params.n == 1 else f"{parent.request_id}#{index}"
        request = Request(child_id, parent.prompt_token_ids, max_tokens, priority=priority)
        seed = None if params.seed is None else params.seed + index
        detok = IncrementalDetokenizer(self.tokenizer, parent.prompt_token_ids,
                                       skip_special_tokens=params.skip_special_tokens, stop=params.stop or [],
                                       include_stop_str_in_output=params.include_stop_str_in_output
                                       ) if self.detokenize else None
        completion = CompletionOutput(index=index, logprobs=[] if params.logprobs is not None else None,
                                      cumulative_logprob=0.0 if params.logprobs is not None else None)
        row = SamplingRow(params, parent.prompt_token_ids, request.output_token_ids,
                          new_generator(seed, self.bundle.device),
                          grammar=None if compiled is None else GrammarState(compiled), filters=filters)
        sample = SampleState(request, index, row, detok, completion)
        parent.samples.append(sample)
        self._samples[child_id] = (parent, sample)
        return request

    def abort_request(self, request_id: str) -> None:
        """Drop a request and free its KV blocks now; unknown or finished ids are ignored."""
        parent = self._parents.pop(request_id, None)
        if parent is None:
            return
        ids = [s.request.request_id for s in parent.samples]
        self.scheduler.abort_requests(ids)
        for child_id in ids:
            self._samples.pop(child_id, None)
            self._prompt_lp_ids.discard(child_id)
        self._counters["aborted"] += 1

    def has_unfinished_requests(self) -> bool:
        return bool(self._parents)

    def has_request(self, request_id: str) -> bool:
        """True while the user request is queued or running (not finished, aborted or unknown)."""
        return request_id in self._parents

    # ------------------------------------------------------------------ the step

    def step(self) -> list[RequestOutput]:
        """Schedule, run, sample, update, emit: outputs of requests that progressed this step."""
        return self._emit(self._advance())

    def step_deltas(self) -> StepDeltas:
        """One step, emitted as what each touched sample gained (the engine-core process's output)."""
        deltas = collect_deltas(self._parents, self._advance())
        for request_id in deltas.done:
            self._forget(self._parents[request_id])
        return deltas

    def finish_samples(self, request_id: str, indices: list[int], stop_reason: str | None = None) -> None:
        """End samples the API process stopped (a stop string matched there); frees their blocks now."""
        parent = self._parents.get(request_id)
        if parent is None:
            return
        for index in indices:
            sample = parent.samples[index] if 0 <= index < len(parent.samples) else None
            if sample is not None and sample.completion.finish_reason is None:
                self.scheduler.finish_request(sample.request.request_id, sample.finish("stop", stop_reason))
        if parent.finished():
            self._forget(parent)

    def _advance(self) -> set[str]:
        """Schedule, run, sample and update one step; the ids of the user requests it touched.

        With async scheduling (engine/inflight.py) the step is launched before the previous one's
        tokens are read, and is itself read by the next call; otherwise it completes here.
        """
        self.check_health()
        out = self.scheduler.schedule()  # counts the in-flight step's pending tokens
        touched = self._ended_by_scheduler(out.finished_ids)
        if not out.scheduled:
            return touched | self._drain()
        self._count_scheduled(out)
        step = self._launch(out)
        touched |= self._drain()  # the previous step's tokens, read while this one runs
        step.marked = self.scheduler.mark_scheduled(out)
        for request in step.marked:
            self._samples[request.request_id][1].row.num_pending = 1
        if step.sync:
            return touched | self._complete(step)
        self._inflight = step
        return touched

    def _launch(self, out: SchedulerOutput) -> InflightStep:
        """Run the model and issue the sampler; the sampled ids start their way to the host."""
        prev = self._inflight
        with self.execution.guard():  # the platform's grad mode
            if out.blocks_to_copy:  # copy-on-write blocks the scheduler asked for, before they are read
                self.allocator.copy_blocks(self.runner.kv_caches, out.blocks_to_copy)
            result = self.runner.execute(out, self._prompt_logprob_ids(out),
                                         prev.pending_tokens() if prev is not None else None)
            return self._sample(out, result)

    def _sample(self, out: SchedulerOutput, result: RunnerOutput) -> InflightStep:
        """Issue the sampler on the step's logits, then the platform's sync, then the copy to the host."""
        rows = [self._samples[child_id][1].row for child_id in result.sample_ids]
        sync = not self.async_scheduling or needs_sync(rows, bool(result.prompt_logits))
        step = InflightStep(out, result, sync)
        if rows:
            sampler_out = self.sampler.launch(result.sample_logits, rows)
            step.token_ids = sampler_out.token_ids  # int64 [B_s] on the device
            step.logprobs = list(zip(sampler_out.logprobs, sampler_out.sampled_logprobs))
        self.execution.sync()  # once a step, after the forward and sampling are issued
        if rows:
            step.copy = start_host_copy(self.execution, step.token_ids)
        return step

    def _drain(self) -> set[str]:
        """Complete the step in flight, if any."""
        step, self._inflight = self._inflight, None
        return set() if step is None else self._complete(step)

    def _complete(self, step: InflightStep) -> set[str]:
        """Read a launched step's tokens and process them: logprobs, stop conditions, outputs.

        Rows of requests that finished or were aborted since the launch are discarded.
        """
        with self.execution.guard():
            touched = self._record_prompt_logprobs(step.result)
        if step.copy is None:
            return touched
        tokens = self._read_tokens(step)
        row_of = {child_id: i for i, child_id in enumerate(step.result.sample_ids)}
        sampled, logprobs = {}, {}
        for request in step.marked:
            if request.is_finished():
                continue  # stopped by the step before, aborted, or ended by the API process
            child_id, row = request.request_id, row_of[request.request_id]
            request.resolve_pending_token(tokens[row])
            self._samples[child_id][1].row.num_pending = 0
            sampled[child_id], logprobs[child_id] = tokens[row], step.logprobs[row]
        return touched | self._process_samples(sampled, logprobs)

    def _ended_by_scheduler(self, request_ids: list[str]) -> set[str]:
        # The scheduler ends a request that outgrew the whole pool (only possible when
        # max_model_len exceeds the pool, which allocate_pool prevents); report it as "length".
        touched = set()
        for child_id in request_ids:
            owner = self._samples.get(child_id)
            if owner is not None and owner[1].completion.finish_reason is None:
                owner[1].finish("length")
                touched.add(owner[0].request_id)
        return touched

    def _count_scheduled(self, out: SchedulerOutput) -> None:
        self._counters["steps"] += 1
        self._counters["computed"] += out.num_batched_tokens
        self._counters["preempted"] += len(out.preempted_ids)

    def _prompt_logprob_ids(self, out: SchedulerOutput) -> set[str]:
        if not self._prompt_lp_ids:
            return set()
        return {s.request.request_id for s in out.scheduled
                if s.request.request_id in self._prompt_lp_ids and s.start < s.request.num_prompt_tokens}

    def _read_tokens(self, step: InflightStep) -> list[int]:
        """The step's sampled ids on the host: waits for the copy (and so for the step's sampling)."""
        return step.copy.wait().tolist()

    def _record_prompt_logprobs(self, result: RunnerOutput) -> set[str]:
        touched = set()
        for child_id, (first_pos, logits) in result.prompt_logits.items():
            parent, _ = self._samples[child_id]
            prompt = parent.prompt_token_ids
            have = len(parent.prompt_logprobs)  # positions 0..have-1 recorded (position 0 is None)
            # logits row i predicts the token at first_pos + i + 1
            start = max(have - 1 - first_pos, 0)
            stop = min(logits.shape[0], len(prompt) - 1 - first_pos)
            if stop > start:
                targets = torch.tensor(prompt[first_pos + start + 1: first_pos + stop + 1], device=logits.device)
                entries = position_logprobs(logits[start:stop], targets, parent.params.prompt_logprobs)
                parent.prompt_logprobs.extend(self._decorate(e) for e in entries)
                touched.add(parent.request_id)
            if len(parent.prompt_logprobs) >= len(prompt):
                self._prompt_lp_ids.discard(child_id)  # complete: later steps need no prompt rows
        return touched

    def _process_samples(self, sampled: dict[str, int], logprobs: dict[str, tuple[dict | None, float | None]]) -> set[str]:
        touched = set()
        samples, eos_ids, max_len = self._samples, self.eos_ids, self.max_model_len
        for child_id, token in sampled.items():
            parent, sample = samples[child_id]
            params = parent.params
            if parent.first_token_time is None:
                parent.first_token_time = time.monotonic()
            if params.logprobs is not None:
                self._record_logprobs(sample, *logprobs[child_id])
            if sample.detok is not None:
                sample.detok.push_one(token)
            why = stop_reason_for(sample, params, token, eos_ids, sample.request.max_tokens, max_len)
            grammar = sample.row.grammar
            if grammar is not None and (not grammar.accept(token) or grammar.terminated) and why is None:
                why = ("stop", None)  # the grammar is complete (or was bypassed): nothing may follow
            if why is not None:
                self.scheduler.finish_request(child_id, sample.finish(*why))
            touched.add(parent.request_id)
        self._counters["generated"] += len(sampled)
        return touched

    def _record_logprobs(self, sample: SampleState, entry: dict | None, chosen: float) -> None:
        sample.completion.logprobs.append(self._decorate(entry))
        sample.completion.cumulative_logprob += chosen

    def _decorate(self, entry: dict[int, tuple[float, int]] | None) -> dict | None:
        if entry is None or not self.detokenize:
            return entry  # without detokenizing, the API process adds the texts
        return {tok: (lp, rank, self._text_of(tok)) for tok, (lp, rank) in entry.items()}

    def _text_of(self, token_id: int) -> str:
        """A token's text alone, as logprob entries show it; cached, as the same tokens recur."""
        text = self._token_text.get(token_id)
        if text is None:
            text = self._token_text[token_id] = self.tokenizer.decode([token_id])
        return text

    def _emit(self, touched: set[str]) -> list[RequestOutput]:
        outputs = []
        for request_id in touched:
            parent = self._parents.get(request_id)
            if parent is None:
                continue
            done = parent.finished()
            if done or not parent.final_only:
                outputs.append(parent.to_output(done))
            if done:
                self._forget(parent)
        return outputs

    def _forget(self, parent: ParentState) -> None:
        del self._parents[parent.request_id]
        for sample in parent.samples:
            self._samples.pop(sample.request.request_id, None)
            self._prompt_lp_ids.discard(sample.request.request_id)

    def check_health(self) -> None:
        """Raise EngineDeadError once the engine cannot step (a tensor-parallel rank fell)."""
        if self.executor is not None:
            self.executor.check_alive()

    def shutdown(self) -> None:
        """Stop the tensor-parallel workers, if any (bounded; idempotent)."""
        if self.executor is not None:
            self.executor.shutdown()

    # ------------------------------------------------------------------ observability

    def stats(self) -> EngineStats:
        """Counters and gauges for metrics; cheap, call between steps."""
        kv, c = self.kv, self._counters
        return EngineStats(
            num_running=self.scheduler.num_running, num_waiting=self.scheduler.num_waiting,
            kv_usage=kv.usage, num_free_blocks=kv.num_free_blocks, num_total_blocks=self.num_blocks,
            num_cached_blocks=kv.num_cached_blocks, prefix_queries=kv.prefix_queries, prefix_hits=kv.prefix_hits,
            prompt_tokens_total=c["prompt"], generation_tokens_total=c["generated"],
            tokens_computed_total=c["computed"], num_preemptions_total=c["preempted"],
            num_aborted_total=c["aborted"], num_steps=c["steps"],
        )

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            chat_template: str | None = None) -> list[int]:
        """Token ids of a conversation rendered through the model's chat template."""
        if not getattr(self.tokenizer, "chat_template", None) and chat_template is None:
            raise RequestError("this model has no chat template; pass chat_template= or use generate()")
        rendered = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                      chat_template=chat_template, tokenize=False)
        return self.tokenizer(rendered, add_special_tokens=False).input_ids


def _startup_options(args: EngineArgs) -> dict[str, Any]:
    """What tokenmill_startup is told about the engine (interfaces: plain values only)."""
    return {"dtype": args.dtype, "kv_cache_dtype": args.kv_cache_dtype, "quantization": args.quantization,
            "max_num_seqs": args.max_num_seqs, "max_num_batched_tokens": args.max_num_batched_tokens,
            "enforce_eager": args.enforce_eager, "block_size": args.block_size}
