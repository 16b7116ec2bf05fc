"""The pluggy hook specifications: the whole contract between the core and a hardware plugin.

A plugin is a module (or object) registered under the entry-point group `tokenmill.plugins`
whose functions carry `@hookimpl`. It must implement `tokenmill_platform`,
`tokenmill_attention_backend`, `tokenmill_kv_allocator` and `tokenmill_communicator`. Everything
else is optional, and the core's default is written in each docstring.

`tokenmill_platform` is asked of every plugin. Once the engine has chosen a platform, every other
hook is called on that platform's plugin alone (contract 2), so implementations need no guard on
`platform.name`; a contract-1 plugin's guards keep working. Implementations may accept fewer
arguments than a spec names (pluggy passes only those they declare), which is how older plugins
keep working when a minor version adds an argument.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from tokenmill.interfaces import (
        AttentionBackend,
        AttentionSpec,
        Communicator,
        ExecutionContext,
        KVCacheAllocator,
        LinearMethod,
        OpOverrides,
        Platform,
        ShapeBuckets,
        StepRunner,
    )

PROJECT_NAME = "tokenmill"
ENTRY_POINT_GROUP = "tokenmill.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ----------------------------------------------------------------------------- discovery


@hookspec
def tokenmill_platform() -> "Platform":
    """Describe the platform this plugin drives.

    Must be cheap and must not raise when the hardware is missing: availability is reported by
    the returned object's `is_available()`, not by failing here.

    :returns: a Platform (see tokenmill.interfaces), one per plugin.

    results are collected into a list.
    """


@hookspec
def tokenmill_startup(platform: "Platform", options: dict[str, Any]) -> None:
    """Prepare the chosen platform, once per engine, before the model loads (since 2.0; optional).

    The place for start-up side effects: compiling kernels in the background, initialising a
    runtime. Not called for plugins that were not chosen.

    :param platform: the platform the engine runs on.
    :param options: engine options, e.g. {"dtype": "auto", "max_num_seqs": 256, "enforce_eager": False}.

    results are collected into a list (and ignored).
    """


# ----------------------------------------------------------------------------- required pieces


@hookspec(firstresult=True)
def tokenmill_attention_backend(platform: "Platform", spec: "AttentionSpec") -> "AttentionBackend | None":
    """Supply the paged-attention backend for a model's attention shape.

    :param platform: the platform the engine runs on.
    :param spec: heads, head size, block size and dtype of the model's attention.
    :returns: an AttentionBackend; the core calls its `unsupported_reasons(spec)` and refuses to
        start with those reasons if the list is not empty.

    firstresult: the first non-None result wins; return None to decline.
    """


@hookspec(firstresult=True)
def tokenmill_kv_allocator(
    platform: "Platform", device_index: int, memory_utilization: float
) -> "KVCacheAllocator | None":
    """Supply the allocator that owns the KV block pool's memory on one device.

    :param platform: the platform the engine runs on.
    :param device_index: which device of that platform (the tensor-parallel rank's local device).
    :param memory_utilization: --gpu-memory-utilization, the share (0, 1] of the device's memory
        that weights, activations and the KV pool may fill together (default 0.9; since 2.0).
        Host-memory allocators may ignore it.
    :returns: a KVCacheAllocator.

    firstresult: the first non-None result wins; return None to decline.
    """


@hookspec(firstresult=True)
def tokenmill_communicator(platform: "Platform", group: Any) -> "Communicator | None":
    """Supply collectives over a torch.distributed process group.

    :param platform: the platform the engine runs on.
    :param group: an initialised torch.distributed ProcessGroup (created with
        `platform.dist_backend`), or None for the default world group.
    :returns: a Communicator.

    firstresult: the first non-None result wins; return None to decline.
    """


# ----------------------------------------------------------------------------- optional pieces


@hookspec
def tokenmill_op_overrides(platform: "Platform") -> "OpOverrides | None":
    """Offer faster versions of named ops (see tokenmill.ops.registry.OP_NAMES).

    :param platform: the platform the engine runs on.
    :returns: OpOverrides whose keys are op names; unknown names are refused at registration.
        An op nobody overrides keeps the core's plain-torch reference.

    results are collected into a list; later plugins' entries win over earlier ones.
    """


@hookspec(firstresult=True)
def tokenmill_step_runner(platform: "Platform", options: dict[str, Any]) -> "StepRunner | None":
    """Supply a graph-capture or compilation wrapper for the model step (interfaces.Step).

    Every step (prefill, mixed and decode) goes through the wrapped step; on static platforms it
    is already padded to a bucket. Not asked under --enforce-eager.

    :param platform: the platform the engine runs on.
    :param options: engine options that matter to capture: enforce_eager, max_num_seqs,
        max_model_len, block_size, `buckets` (the ShapeBuckets in force, or None), and
        `api_server_process` (True when the engine runs in the engine-core process beside the
        API server's process on the same host, which then takes CPU time for every token; a
        CPU backend may leave it a core on latency-bound steps).
    :returns: a StepRunner, or None to run the step eagerly.

    firstresult: the first non-None result wins; return None to decline.
    """


@hookspec(firstresult=True)
def tokenmill_shape_buckets(platform: "Platform", limits: dict[str, int]) -> "ShapeBuckets | None":
    """Declare the padded shapes a static-shape platform compiles for (since 2.0; optional).

    Asked only when `platform.static_shapes` is True.

    :param platform: the platform the engine runs on.
    :param limits: {"max_num_batched_tokens", "max_num_seqs", "max_blocks_per_seq"}: the largest
        T, B and block-table width the engine will ask for.
    :returns: ShapeBuckets whose largest entries cover the limits, or None for the core's default
        (tokenmill.worker.padding.default_buckets: powers of two from 16 tokens, 1 request and
        1 block up to the limits).

    firstresult: the first non-None result wins; return None to decline.
    """


@hookspec(firstresult=True)
def tokenmill_execution_context(platform: "Platform") -> "ExecutionContext | None":
    """Supply the grad mode and per-step sync point for device work (since 2.0; optional).

    :param platform: the platform the engine runs on.
    :returns: an ExecutionContext, or None for torch.inference_mode() and no sync.

    firstresult: the first non-None result wins; return None to decline.
    """


@hookspec(firstresult=True)
def tokenmill_linear_method(platform: "Platform", scheme: str) -> "LinearMethod | None":
    """Supply the kernels that run linear layers stored in a quantized `scheme`.

    :param platform: the platform the engine runs on.
    :param scheme: "int4", "int8", "int4_groups" or "fp8", as LinearMethod's docstring in tokenmill.interfaces
        defines (the last two carry a checkpoint's own codes, through the optional pack_stored).
    :returns: a LinearMethod, or None when this platform has no kernel for `scheme`; the core then
        keeps those layers dense under `--quantization auto` and refuses an explicit request.

    firstresult: the first non-None result wins; return None to decline.
    """
