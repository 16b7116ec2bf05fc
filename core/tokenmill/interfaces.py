"""The Protocols and plain-data types that plugin hook results must satisfy.

This module is the shape of the plugin contract. It imports torch only under TYPE_CHECKING so that
reading the contract is free; tensors cross it with the shapes and dtypes written on each method.
Notation: T = tokens in the step (flattened over requests), B = requests in the step,
Hq / Hkv = query / KV heads, D = head size, N = number of KV blocks, S = block size.

Optional members (marked "optional" below) may be left out by a plugin; the core then uses the
default written beside them (tokenmill.plugin_base.optional reads them). The base classes in
tokenmill.plugin_base supply every optional member, so a plugin that subclasses them is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

# "major.minor". An additive change (a new optional hook, member or argument) bumps the minor, and
# plugins built for an older minor of the same major keep working; anything else bumps the major.
# Plugins built for contract 1 (an int 1) are still accepted: every contract-2 addition is optional.
# contract_version.py holds the rules, docs/backends.md the compatibility table.
CONTRACT_VERSION = "2.0"


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True, slots=True)
class Availability:
    """Whether a platform's hardware can be used here; `reason` says why not when it cannot."""

    available: bool
    reason: str = ""


@runtime_checkable
class Platform(Protocol):
    """What a plugin says about its accelerator. Plain attributes, plus one live check."""

    name: str  # the --device name, e.g. "cpu", "cuda"
    device_type: str  # the torch device type, e.g. "cpu", "cuda", "hpu", "xla"
    priority: int  # higher wins when several platforms are available
    contract_version: str | int  # the CONTRACT_VERSION the plugin was built for, e.g. "2.0" (1 = contract 1)
    supported_dtypes: tuple[str, ...]  # of "float32", "bfloat16", "float16"; first = what --dtype auto takes
    dist_backend: str  # torch.distributed backend for tensor parallelism: "gloo", "nccl", "hccl", ...
    # True: the core pads every step to one of the platform's ShapeBuckets (XLA, HPU graphs), and
    # samples with the static-shape sampler; False: exact ragged sizes, nothing padded.
    static_shapes: bool
    graph_capture: str | None  # "cuda_graphs", "hpu_graphs", "xla", or None: informative, for listings
    # Optional, not part of the Protocol check: `quantized_dtypes`, a tuple of dtype names that
    # --dtype auto takes first for a model stored quantized under --quantization auto (the loader
    # then uses each LinearMethod's optional `auto_variant()`; loaders/dtype.py). `kv_cache_dtypes`, a
    # dict of model dtype name -> the cache dtype name --kv-cache-dtype auto takes for it under --dtype
    # auto (default, and always under an explicit --dtype: the model dtype; loaders/dtype.py). And `scheduler_defaults`, a dict of max_num_seqs and/or
    # max_num_batched_tokens the engine takes when the user sets none (engine/scheduler_limits.py).

    def is_available(self) -> Availability:
        """Check the hardware and software now; never raises, explains a refusal in `reason`."""
        ...


# --------------------------------------------------------------------------- attention


@dataclass(frozen=True, slots=True)
class AttentionSpec:
    """The model and cache facts an attention backend needs to decide and lay out its cache."""

    num_heads: int  # Hq
    num_kv_heads: int  # Hkv; Hq % Hkv == 0 (GQA when Hkv < Hq)
    head_size: int  # D
    block_size: int  # S, tokens per KV block
    dtype: Any  # torch.dtype of q/k/v and of the attention output (the model dtype)
    kv_cache_dtype: Any = None  # torch.dtype of the cache; None means `dtype` (--kv-cache-dtype auto)
    # Optional, read only by backends that declare `supports_sliding_window` (see AttentionBackend):
    # the query at position p attends keys j with p - sliding_window < j <= p; None: every j <= p.
    sliding_window: int | None = None
    # Optional, read only by backends that declare `supports_logits_soft_cap`: scores s (after the
    # scale) become cap * tanh(s / cap) before the softmax (Gemma 2); None: no capping.
    logits_soft_cap: float | None = None

    def __post_init__(self) -> None:
        if self.kv_cache_dtype is None:
            object.__setattr__(self, "kv_cache_dtype", self.dtype)


@dataclass(slots=True)
class AttentionBatch:
    """One step's ragged batch, as the model runner hands it to `AttentionBackend.build_metadata`.

    Requests are laid end to end: request b owns query rows query_start_loc[b]:query_start_loc[b+1],
    which are its newest tokens; its earlier seq_lens[b] - query_len tokens are already cached.
    The *_cpu lists mirror the tensors on the host so a backend never has to sync to read them.

    Padding (static-shape platforms only; eager platforms get num_padded_* == 0 and exact sizes):
    the core pads T, B and the block-table width up to the platform's ShapeBuckets. Real requests
    come first, padding requests after them. A padding request caches nothing (seq_len ==
    query_len) and every entry of its block-table row is `null_block`; padding tokens have token id
    0, position 0, and a slot in `null_block`. In a padded pure-decode step every padding request
    has exactly one token (the step stays pure decode); otherwise the first padding request holds
    every padding token and the others have none (query_len == seq_len == 0). Real requests' rows
    are padded with `null_block` past their own blocks. So a backend may write every slot and read
    every block-table entry unconditionally: the null block is reserved, never holds a real token,
    and whatever is written there is never read by a real row. Padding rows' outputs are
    discarded by the core.
    """

    query_start_loc: "torch.Tensor"  # int32 [B + 1], cumulative query lengths, starts at 0
    seq_lens: "torch.Tensor"  # int32 [B], cached + new tokens of each request
    block_tables: "torch.Tensor"  # int32 [B, max_blocks_per_seq], padded with 0
    slot_mapping: "torch.Tensor"  # int64 [T], cache slot (block * S + offset) of each new token
    query_lens_cpu: list[int]  # [B]
    seq_lens_cpu: list[int]  # [B]
    max_query_len: int
    max_seq_len: int
    num_padded_tokens: int = 0  # trailing rows of T that are padding
    num_padded_reqs: int = 0  # trailing requests of B that are padding
    null_block: int = 0  # the reserved block padding points at (static platforms); 0 otherwise

    @property
    def is_pure_decode(self) -> bool:
        """True when every request brings exactly one new token (a pure decode step)."""
        return self.max_query_len == 1 and min(self.query_lens_cpu, default=1) == 1


@dataclass(frozen=True, slots=True)
class ShapeBuckets:
    """The padded sizes a static-shape platform compiles for; each tuple ascending.

    The core pads a step's request count B and block-table width W up to the smallest bucket that
    fits. A pure-decode step pads T to its padded B (one token per request, so T == B is a batch
    bucket, not a token bucket); any other step pads T to a token bucket, and B to one more than
    needed when T grew, to hold the padding request. Buckets that cannot hold the engine's
    max_num_batched_tokens, max_num_seqs (+1) and max_model_len are refused at start-up, naming
    the flag to lower.
    """

    token_counts: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    block_table_widths: tuple[int, ...]

    def num_shapes(self) -> int:
        """An upper bound on the distinct (T, B, W) step shapes the core can hand the platform."""
        return len(self.token_counts) * len(self.batch_sizes) * len(self.block_table_widths)


@runtime_checkable
class AttentionBackend(Protocol):
    """Paged attention for one platform and one AttentionSpec.

    Optional members (default False): `supports_sliding_window` and `supports_logits_soft_cap` say
    the backend honours those AttentionSpec fields. The core builds one backend per distinct
    per-layer spec (Gemma's local and global layers get two), all from the same plugin; they must
    share `kv_cache_shape`, and a windowed or capped backend must accept the metadata built by
    `build_metadata` of the model's base backend (the spec without a window), because the core
    builds one metadata per step and every layer reads it. A backend without
    `supports_sliding_window` is given no windowed spec: the core then caps the context to the
    smallest window (full attention is exact there) and refuses a longer --max-model-len; a soft
    cap on a backend without `supports_logits_soft_cap` is refused at load.
    """

    name: str

    def unsupported_reasons(self, spec: AttentionSpec) -> list[str]:
        """Why this backend cannot serve `spec`; an empty list means it can."""
        ...

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        """Shape of one layer's cache tensor; the in-tree layout is (2, N, S, Hkv, D)."""
        ...

    def build_metadata(self, batch: AttentionBatch) -> Any:
        """Turn a step's AttentionBatch into whatever `forward` wants; called once per step."""
        ...

    def forward(
        self,
        query: "torch.Tensor",  # [T, Hq, D]
        key: "torch.Tensor",  # [T, Hkv, D], the new tokens' keys
        value: "torch.Tensor",  # [T, Hkv, D]
        kv_cache: "torch.Tensor",  # one layer's cache, shaped kv_cache_shape(N)
        metadata: Any,  # from build_metadata
        scale: float,  # softmax scale, usually D ** -0.5
    ) -> "torch.Tensor":  # [T, Hq, D], same dtype as query; see functional_cache for the other form
        """Write key/value into the cache at slot_mapping, then attend causally over the cache.

        The cache holds `spec.kv_cache_dtype`; key/value arrive in `spec.dtype` and are converted on
        the write. Optional member `functional_cache: bool = False`: when True, `forward` returns
        `(output, updated_cache)`, and the core passes `updated_cache` (same shape and dtype) as
        this layer's cache from then on and never reads `kv_cache` again. The backend need not
        write `kv_cache` in place (it may, on an eager device). XLA-style backends use it so the
        cache is threaded through the graph and can be donated or aliased.
        """
        ...


# --------------------------------------------------------------------------- memory


@runtime_checkable
class KVCacheAllocator(Protocol):
    """Owns the KV block pool's device memory; the block *bookkeeping* lives in the core.

    Call order at start-up: profile_peak (optional) once around the largest dummy step, then
    available_kv_bytes, then allocate; free at shutdown. copy_blocks may come at any step boundary.
    Optional members, with the defaults the core uses when they are missing:
    - `profile_peak(fn) -> int | None`: run `fn` (one forward of the largest step) and return its
      peak activation bytes, so available_kv_bytes can leave room for them. Default: call nothing;
      the core skips the profile run.
    - `swap_out` / `swap_in` below: the scheduler preempts by recomputation and never swaps, so
      they are optional; the kit tests them only on allocators that have them.
    tokenmill.plugin_base.KVAllocatorBase supplies copy_blocks, swap_out, swap_in and free.
    """

    device: "torch.device"

    def available_kv_bytes(self, requested_bytes: int | None) -> int:
        """Bytes the KV pool may take: `requested_bytes` if given and it fits, else a safe default.

        Raises ValueError naming the request and what is free when the request cannot fit. The
        share of an accelerator's memory to fill (--gpu-memory-utilization) reaches the allocator
        as the `memory_utilization` argument of the tokenmill_kv_allocator hook.
        """
        ...

    def allocate(
        self, num_layers: int, shape: tuple[int, ...], dtype: "torch.dtype"
    ) -> list["torch.Tensor"]:  # num_layers tensors, each `shape`, zeroed
        """Allocate the pool: one cache tensor per layer, in the KV-cache dtype."""
        ...

    def copy_blocks(
        self, kv_caches: list["torch.Tensor"], src_to_dst: list[tuple[int, int]]
    ) -> None:
        """Copy whole blocks (dim 1 of each layer's cache) in place: used for copy-on-write."""
        ...

    def free(self, kv_caches: list["torch.Tensor"]) -> None:
        """Release the pool; the list is emptied."""
        ...


@runtime_checkable
class SwappingAllocator(KVCacheAllocator, Protocol):
    """An allocator that also swaps blocks to host memory (optional; see KVCacheAllocator)."""

    def swap_out(
        self, kv_caches: list["torch.Tensor"], block_ids: list[int]
    ) -> list["torch.Tensor"]:  # per layer, host tensor [2, len(block_ids), S, Hkv, D]
        """Copy blocks to host memory and return the host copies."""
        ...

    def swap_in(
        self, kv_caches: list["torch.Tensor"], host_blocks: list["torch.Tensor"], block_ids: list[int]
    ) -> None:
        """Copy host blocks (from swap_out) back into the pool at `block_ids`."""
        ...


# --------------------------------------------------------------------------- communication


@runtime_checkable
class Communicator(Protocol):
    """Collectives over one process group; tensors live on the platform's device.

    Ranks are group-local: `rank` is this process's rank inside the group (0..world_size-1), and
    the `src`/`dst` arguments below are group ranks too, not global ones.
    tokenmill.plugin_base.TorchDistCommunicator implements all of it over torch.distributed.
    """

    rank: int
    world_size: int

    def all_reduce(self, tensor: "torch.Tensor") -> "torch.Tensor":
        """Sum over ranks; returns a tensor of the input's shape (may be the input, reduced in place)."""
        ...

    def all_gather(self, tensor: "torch.Tensor", dim: int = 0) -> "torch.Tensor":
        """Concatenate every rank's tensor along `dim`, in rank order: shape[dim] * world_size."""
        ...

    def reduce_scatter(self, tensor: "torch.Tensor", dim: int = 0) -> "torch.Tensor":
        """Sum over ranks, then keep this rank's slice along `dim`: shape[dim] // world_size."""
        ...

    def broadcast(self, tensor: "torch.Tensor", src: int = 0) -> "torch.Tensor":
        """Every rank gets group rank `src`'s tensor (in place)."""
        ...

    def send(self, tensor: "torch.Tensor", dst: int) -> None:
        """Point-to-point send to group rank `dst`; pairs with `recv` there."""
        ...

    def recv(self, tensor: "torch.Tensor", src: int) -> "torch.Tensor":
        """Receive from group rank `src` into `tensor` (shape and dtype as sent) and return it."""
        ...


# --------------------------------------------------------------------------- execution


# The step a StepRunner wraps: model inputs in, logits of the asked rows out (output head included).
#   step(input_ids int64 [T], positions int64 [T], attn_metadata, logits_indices) -> float32 logits
# T is the (padded, on static platforms) token count; attn_metadata is what the attention
# backend's build_metadata returned for that step; logits_indices is None (every row: [T, V], as
# in a pure-decode step, where rows and sampled requests line up) or int64 [R], the rows to
# project ([R, V]; on static platforms R is the padded batch size). Every step, prefill, mixed and
# decode, goes through it, always called with these four positional arguments.
Step = Callable[..., "torch.Tensor"]


@runtime_checkable
class StepRunner(Protocol):
    """Wraps the model's step for graph capture or compilation (CUDA/HPU graphs, XLA buckets)."""

    def wrap(self, step: Step) -> Step:
        """Return a callable with `step`'s signature (see Step) that must give equal results."""
        ...


@runtime_checkable
class ExecutionContext(Protocol):
    """How the core runs device work on a platform: the grad mode, and the end-of-step sync point.

    The core's default (tokenmill.plugin_base.DefaultExecution) is torch.inference_mode() and no
    sync. XLA wants no_grad (inference tensors cannot be traced) and mark_step; HPU mark_step.

    Optional, not part of the Protocol check (contexts built on DefaultExecution inherit the
    default): `to_host(tensor) -> HostCopy`, which starts copying a small device tensor (the
    sampled token ids, int64 [B]) to the host without waiting for the device; its `wait()` returns
    the host tensor once the copy is done. Async scheduling calls `wait()` only after the next
    step is launched, so a non-blocking copy (pinned memory and an event on CUDA) lets the host
    read step n's tokens while step n+1 runs. The default copies when `wait()` is called.
    """

    def guard(self) -> AbstractContextManager:
        """A fresh context manager the core enters around each step, the profile run and warm-up."""
        ...

    def sync(self) -> None:
        """Called once per step after the forward and sampling are issued and before the host
        reads the sampled tokens (e.g. xm.mark_step / htcore.mark_step)."""
        ...


# --------------------------------------------------------------------------- linear method


@runtime_checkable
class LinearMethod(Protocol):
    """Runs the model's linear layers from weights the platform repacked once, after loading.

    Schemes (what `scheme` means; the core picks one per layer, see loaders/quantization.py):
    - "int4": weight-only 4 bits, asymmetric, one scale and one offset per group of 32 inputs
      (w = q * scale + offset, q in 0..15). Exact for GGUF Q4_1 and Q4_K weights.
    - "int8": weight-only 8 bits, symmetric, one scale per output row or finer (per group of 32
      inputs is exact for GGUF Q8_0 weights).
    - "int4_groups": weight-only 4 bits as a GPTQ or AWQ checkpoint stores them, in groups of any
      `group_size` along K (StoredInt4). The core hands the stored codes to `pack_stored`.
    - "fp8": float8 e4m3 weights with a per-tensor or per-output-channel scale (StoredFp8), through
      `pack_stored`; how the activations are rounded is the method's choice.
    """

    scheme: str

    def pack(self, weight: "torch.Tensor") -> Any:
        """weight [N, K] in the model dtype, on the device -> opaque packed state for `apply`."""
        ...

    # optional: pack_stored(stored, weight) -> packed state, or None to decline (that layer then
    # runs dense). `stored` is a StoredInt4 or StoredFp8 on the device; `weight` [N, K] is the
    # same weight dequantized to the model dtype (in the stored input order), for methods that
    # keep a dense copy for wide steps. Default: the core keeps stored layers dense.
    # optional: auto_variant() -> LinearMethod, the method to use when --dtype auto took the model
    # dtype from the platform's quantized_dtypes (it may run wide steps in a rounder dtype, as the
    # CPU's bf16 GEMMs under float32 activations). Default: the method itself.

    def apply(self, packed: Any, x: "torch.Tensor") -> "torch.Tensor":
        """x [T, K] in the model dtype -> x @ W^T, [T, N] in the model dtype (bias is added by the core)."""
        ...


@dataclass(slots=True)
class StoredInt4:
    """A 4-bit weight as a GPTQ/AWQ checkpoint holds it, unpacked: w[n, k] = (q[n, k] - zeros[n, g]) *
    scales[n, g] with g = k // group_size. Act-order checkpoints are handed over with K sorted by
    group (the core permutes the activations to match, so methods only ever see contiguous groups)."""

    codes: "torch.Tensor"  # uint8 [N, K], 0..15
    scales: "torch.Tensor"  # float32 [N, K / group_size]
    zeros: "torch.Tensor"  # float32 [N, K / group_size], 0..15 (symmetric checkpoints: 8)
    group_size: int  # inputs per group: a divisor of K (32, 64, 128 or K itself in practice)


@dataclass(slots=True)
class StoredFp8:
    """An e4m3 weight and its scale: w[n, k] = weight[n, k] * scale[n] (scale [1]: one per tensor)."""

    weight: "torch.Tensor"  # float8_e4m3fn [N, K]
    scale: "torch.Tensor"  # float32 [N] or [1]


@dataclass(slots=True)
class OpOverrides:
    """Faster versions of named ops a plugin supplies; names must be in ops.registry.OP_NAMES."""

    ops: dict[str, Callable[..., Any]] = field(default_factory=dict)
