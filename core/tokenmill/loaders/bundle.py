"""load_model_bundle: from a model path (or the embedded default) to a runnable model and its tokenizer."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from tokenmill.config import check_quantization
from tokenmill.errors import ModelLoadError
from tokenmill.interfaces import AttentionSpec
from tokenmill.loaders.chat_template_source import read_chat_template
from tokenmill.loaders.default_model import default_model_path
from tokenmill.loaders.dtype import auto_quantized, resolve_dtype, resolve_kv_cache_dtype
from tokenmill.loaders.gguf_checkpoint import GGUFCheckpoint
from tokenmill.loaders.heap_trim import trim_heap
from tokenmill.loaders.hub import model_path
from tokenmill.loaders.quant_config import quant_format
from tokenmill.loaders.layer_attention import plan_layer_attention
from tokenmill.loaders.layer_packing import LayerPacker
from tokenmill.loaders.quantization import linear_schemes, pack_layers, packing_methods, stores_quantized
from tokenmill.loaders.quantized_checkpoint import QuantizedCheckpoint
from tokenmill.loaders.safetensors_checkpoint import PICKLE_SUFFIXES, SafetensorsCheckpoint, refuse_pickle
from tokenmill.loaders.weights import Checkpoint, load_weights
from tokenmill.models import ArchConfig, arch_config, checkpoint_layout
from tokenmill.models.rotary import cos_sin_cache
from tokenmill.ops import OpRegistry
from tokenmill.tokenizer import load_tokenizer

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ModelBundle:
    """Everything the engine needs from a loaded model."""

    model: nn.Module  # forward(input_ids, positions, kv_caches, attn_metadata), compute_logits(hidden)
    arch: ArchConfig
    tokenizer: Any  # transformers PreTrainedTokenizerFast, .chat_template set when the model has one
    attn_backend: Any  # the platform's AttentionBackend for attn_spec
    attn_spec: AttentionSpec  # the base spec (no sliding window); windowed layers have their own backends
    dtype: torch.dtype
    device: torch.device
    max_model_len: int
    eos_token_ids: list[int]
    source: str  # the path the model came from
    num_params: int
    packed_layers: dict[str, int]  # scheme -> linear layers running packed ({} when all are dense)
    kv_window: int | None = None  # every layer attends through a window this long at most: the KV
    # manager frees blocks behind it (None: some layer attends to everything)


def open_checkpoint(model: str | None, revision: str | None = None) -> Checkpoint:
    """The checkpoint at `model` (a model directory, .gguf file or Hub id); None means the embedded default."""
    path = default_model_path() if model is None else model_path(model, revision)
    if not path.exists():
        raise ModelLoadError(
            f"model {model!r} does not exist; give a model directory (config.json + *.safetensors), a .gguf file "
            "or a Hugging Face Hub id (org/name)"
        )
    if path.is_dir():
        checkpoint = SafetensorsCheckpoint(path)
        fmt = quant_format(checkpoint.config, checkpoint.source)  # GPTQ / AWQ / FP8, or refused by name
        return checkpoint if fmt is None else QuantizedCheckpoint(checkpoint, fmt)
    if path.suffix in PICKLE_SUFFIXES:
        raise refuse_pickle(path)
    if path.suffix == ".safetensors":
        raise ModelLoadError(f"{path} is a bare weights file; pass the directory holding it and its config.json")
    return GGUFCheckpoint(path)


def load_model_bundle(
    model: str | None,
    *,
    platform: Any,
    plugins: Any,
    dtype: str = "auto",
    block_size: int = 16,
    max_model_len: int | None = None,
    quantization: str = "none",
    kv_cache_dtype: str = "auto",
    tokenizer: str | None = None,
    revision: str | None = None,
    chat_template: str | None = None,
    shard: Callable[[nn.Module, AttentionSpec], tuple[Any, AttentionSpec]] | None = None,
) -> ModelBundle:
    """Load `model` for `platform`: weights cast to the resolved dtype on the platform's device.

    `quantization` (see loaders/quantization.py) then repacks linear layers for the platform's
    int4/int8 kernels; the default here is "none" (dense), the engine's is "auto". `tokenizer`
    (a path or Hub id) replaces the model's tokenizer, `revision` picks the Hub revision of a Hub
    id, and `chat_template` (inline or a file) replaces the tokenizer's chat template.
    """
    check_quantization(quantization)
    checkpoint = open_checkpoint(model, revision)
    quantized = quantization == "auto" and stores_quantized(checkpoint)
    torch_dtype = resolve_dtype(dtype, platform, quantized)
    auto_dtype = dtype == "auto" and quantized and auto_quantized(platform) is not None
    if auto_dtype:
        log.info("--dtype auto: %s activations for this quantized model (the platform's quantized_dtypes)",
                 str(torch_dtype).removeprefix("torch."))
    device = torch.device(platform.device_type)
    arch, entry = arch_config(checkpoint.config, source=checkpoint.source)
    source = Path(checkpoint.source) if tokenizer is None else model_path(tokenizer, None, tokenizer_only=True)
    tokenizer = load_tokenizer(source)  # before the weights: fail fast, cheaply
    if chat_template is not None:
        tokenizer.chat_template = read_chat_template(chat_template)
    spec = AttentionSpec(arch.num_heads, arch.num_kv_heads, arch.head_size, block_size, torch_dtype,
                         resolve_kv_cache_dtype(kv_cache_dtype, torch_dtype, platform, dtype == "auto"),
                         logits_soft_cap=arch.attn_logit_softcap)
    attention = plan_layer_attention(arch, spec, plugins, platform, max_model_len)
    backend, max_len = attention.base_backend, attention.max_model_len
    ops = OpRegistry(plugins.op_overrides(platform))
    cos_sin = cos_sin_cache(arch, max_len, device)  # float32 [max_len, D]
    with torch.device("meta"):  # no memory or random init for weights the checkpoint overwrites
        net = entry.model_class(arch, ops, attention.layer_backends, cos_sin)
    layout = checkpoint_layout(net, arch)
    num_params = sum(math.prod(shape) for parts in layout.values() for _, shape in parts)
    choose = partial(packing_methods, platform=platform, plugins=plugins, quantization=quantization,
                     auto_dtype=auto_dtype)
    if shard is None:  # each layer packed as soon as its weights are in (layer_packing.py)
        schemes = linear_schemes(net, layout, checkpoint, quantization)
        packer = LayerPacker(net, layout, schemes, choose(schemes), checkpoint)
        _load(net, layout, checkpoint, torch_dtype, device, packer.loaded)
        packed = packer.finish()
    else:  # tensor parallelism: the whole weights are split first, then packed
        _load(net, layout, checkpoint, torch_dtype, device, None)
        backend, spec = shard(net, spec)
        schemes = linear_schemes(net, layout, checkpoint, quantization)
        packed = pack_layers(net, schemes, choose(schemes), (checkpoint, layout))
    trim_heap()  # the dequantized and packing temporaries' pages (heap_trim.py)
    return ModelBundle(
        model=net,
        arch=arch,
        tokenizer=tokenizer,
        attn_backend=backend,
        attn_spec=spec,
        dtype=torch_dtype,
        device=device,
        max_model_len=max_len,
        eos_token_ids=_eos_ids(arch, tokenizer),
        source=checkpoint.source,
        num_params=num_params,
        packed_layers=packed,
        kv_window=attention.kv_window,
    )


def _load(net: nn.Module, layout: Any, checkpoint: Checkpoint, dtype: torch.dtype, device: torch.device,
          loaded: Callable[[str], None] | None) -> None:
    load_weights(net, layout, checkpoint, dtype, device, loaded)
    net.tie_weights()
    net.eval()


def _eos_ids(arch: ArchConfig, tokenizer: Any) -> list[int]:
    ids = list(arch.eos_token_ids)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return list(dict.fromkeys(ids))
