"""The Protocols and plain-data types that plugin hook results must satisfy.

This module is the shape of the plugin contract. It imports torch only under TYPE_CHECKING so that
reading the contract is free; tensors cross it with the shapes and dtypes written on each method.
Notation: T = tokens in the step (flattened over requests), B = requests in the step,
Hq / Hkv = query / KV heads, D = head size, N = number of KV blocks, S = block size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

# Bump when any hookspec or Protocol below changes incompatibly. A plugin states the version it was
# built for in Platform.contract_version; the plugin manager refuses any other value.
CONTRACT_VERSION = 1


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
    contract_version: int  # the CONTRACT_VERSION the plugin was built for
    supported_dtypes: tuple[str, ...]  # of "float32", "bfloat16", "float16"; first = what --dtype auto takes
    dist_backend: str  # torch.distributed backend for tensor parallelism: "gloo", "nccl", ...
    static_shapes: bool  # True when the platform wants padded, bucketed shapes (XLA, HPU)
    graph_capture: str | None  # "cuda_graphs", "hpu_graphs", "xla", or None

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
    dtype: Any  # torch.dtype of q/k/v and of the cache


@dataclass(slots=True)
class AttentionBatch:
    """One step's ragged batch, as the model runner hands it to `AttentionBackend.build_metadata`.

    Requests are laid end to end: request b owns query rows query_start_loc[b]:query_start_loc[b+1],
    which are its newest tokens; its earlier seq_lens[b] - query_len tokens are already cached.
    The *_cpu lists mirror the tensors on the host so a backend never has to sync to read them.
    """

    query_start_loc: "torch.Tensor"  # int32 [B + 1], cumulative query lengths, starts at 0
    seq_lens: "torch.Tensor"  # int32 [B], cached + new tokens of each request
    block_tables: "torch.Tensor"  # int32 [B, max_blocks_per_seq], padded with 0
    slot_mapping: "torch.Tensor"  # int64 [T], cache slot (block * S + offset) of each new token
    query_lens_cpu: list[int]  # [B]
    seq_lens_cpu: list[int]  # [B]
    max_query_len: int
    max_seq_len: int

    @property
    def is_pure_decode(self) -> bool:
        """True when every request brings exactly one new token (a pure decode step)."""
        return self.max_query_len == 1


@runtime_checkable
class AttentionBackend(Protocol):
    """Paged attention for one platform and one AttentionSpec."""

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
    ) -> "torch.Tensor":  # [T, Hq, D], same dtype as query
        """Write key/value into the cache at slot_mapping, then attend causally over the cache."""
        ...


# --------------------------------------------------------------------------- memory


@runtime_checkable
class KVCacheAllocator(Protocol):
    """Owns the KV block pool's device memory; the block *bookkeeping* lives in the core."""

    device: "torch.device"

    def available_kv_bytes(self, requested_bytes: int | None) -> int:
        """Bytes the KV pool may take: `requested_bytes` if given and it fits, else a safe default.

        Raises ValueError naming the request and what is free when the request cannot fit.
        """
        ...

    def allocate(
        self, num_layers: int, shape: tuple[int, ...], dtype: "torch.dtype"
    ) -> list["torch.Tensor"]:  # num_layers tensors, each `shape`, zeroed
        """Allocate the pool: one cache tensor per layer."""
        ...

    def copy_blocks(
        self, kv_caches: list["torch.Tensor"], src_to_dst: list[tuple[int, int]]
    ) -> None:
        """Copy whole blocks (dim 1 of each layer's cache) in place: used for copy-on-write."""
        ...

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

    def free(self, kv_caches: list["torch.Tensor"]) -> None:
        """Release the pool; the list is emptied."""
        ...


# --------------------------------------------------------------------------- communication


@runtime_checkable
class Communicator(Protocol):
    """Collectives over one process group; tensors live on the platform's device."""

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
        """Every rank gets `src`'s tensor (in place)."""
        ...

    def send(self, tensor: "torch.Tensor", dst: int) -> None:
        """Point-to-point send; pairs with `recv` on `dst`."""
        ...

    def recv(self, tensor: "torch.Tensor", src: int) -> "torch.Tensor":
        """Receive into `tensor` (its shape and dtype must match the sender's) and return it."""
        ...


# --------------------------------------------------------------------------- step runner


@runtime_checkable
class StepRunner(Protocol):
    """Wraps the model's step for graph capture or compilation (CUDA/HPU graphs, XLA buckets)."""

    def wrap(self, step: Callable[..., "torch.Tensor"]) -> Callable[..., "torch.Tensor"]:
        """Return a callable with `step`'s signature that runs it faster; must give equal results."""
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
    """

    scheme: str

    def pack(self, weight: "torch.Tensor") -> Any:
        """weight [N, K] in the model dtype, on the device -> opaque packed state for `apply`."""
        ...

    def apply(self, packed: Any, x: "torch.Tensor") -> "torch.Tensor":
        """x [T, K] in the model dtype -> x @ W^T, [T, N] in the model dtype (bias is added by the core)."""
        ...


@dataclass(slots=True)
class OpOverrides:
    """Faster versions of named ops a plugin supplies; names must be in ops.registry.OP_NAMES."""

    ops: dict[str, Callable[..., Any]] = field(default_factory=dict)
