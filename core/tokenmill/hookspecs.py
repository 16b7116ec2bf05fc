"""The pluggy hook specifications: the whole contract between the core and a hardware plugin.

A plugin is a module (or object) registered under the entry-point group `tokenmill.plugins`
whose functions carry `@hookimpl`. It must implement `tokenmill_platform`, and for its own
platform `tokenmill_attention_backend`, `tokenmill_kv_allocator` and `tokenmill_communicator`.
Op overrides, linear methods and the step runner are optional: the core has plain-torch references for both.

Every hook except `tokenmill_platform` receives the chosen `platform`; an implementation must
return None when `platform.name` is not its own, so several plugins can be installed at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from tokenmill.interfaces import (
        AttentionBackend,
        AttentionSpec,
        Communicator,
        KVCacheAllocator,
        LinearMethod,
        OpOverrides,
        Platform,
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
def tokenmill_kv_allocator(platform: "Platform", device_index: int) -> "KVCacheAllocator | None":
    """Supply the allocator that owns the KV block pool's memory on one device.

    :param platform: the platform the engine runs on.
    :param device_index: which device of that platform (the tensor-parallel rank's local device).
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
    """Supply a graph-capture or compilation wrapper for the model step.

    :param platform: the platform the engine runs on.
    :param options: engine options that matter to capture, e.g. {"enforce_eager": False,
        "max_num_seqs": 256}.
    :returns: a StepRunner, or None to run the step eagerly.

    firstresult: the first non-None result wins; return None to decline.
    """


@hookspec(firstresult=True)
def tokenmill_linear_method(platform: "Platform", scheme: str) -> "LinearMethod | None":
    """Supply the kernels that run linear layers stored in a quantized `scheme`.

    :param platform: the platform the engine runs on.
    :param scheme: "int4" or "int8", as LinearMethod's docstring in tokenmill.interfaces defines.
    :returns: a LinearMethod, or None when this platform has no kernel for `scheme`; the core then
        keeps those layers dense under `--quantization auto` and refuses an explicit request.

    firstresult: the first non-None result wins; return None to decline.
    """
