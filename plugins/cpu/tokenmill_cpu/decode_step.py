"""The native decode step (decode_step.cpp): a model as its structures, and one step's call.

decode_step.cpp replays the eager step's native calls (block matmuls, layer ops, paged decode)
from C++, which removes Python and torch dispatch around ~270 calls a token. A ModelPlan is made
only where the eager step would run exactly those calls: the model is LlamaForCausalLM's graph
as built (no tensor parallelism, no q/k norms, no biases), every linear layer including the head
is a PackedLinear on the native blocks, the norms, rotary and silu_and_mul are the plugin's
native layer ops, and every layer attends through this plugin's native decode kernel over a
cache of the model's dtype (no window, no soft cap). Its logits are bit-equal to the eager
step's (tests compare); step_runner.py decides which steps take it.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from tokenmill.models.layers import GatedMLP, PagedSelfAttention, RMSNorm, VocabEmbedding
from tokenmill.models.llama import DecoderLayer, LlamaForCausalLM
from tokenmill.models.packed_linear import PackedLinear

from tokenmill_cpu.attention import CpuAttentionBackend
from tokenmill_cpu.attention_metadata import CpuAttentionMetadata
from tokenmill_cpu.layer_ops import LayerOps
from tokenmill_cpu.linear_methods import BlockLinearMethod
from tokenmill_cpu.native_build import load_kernel
from tokenmill_cpu.quant_matmul import ISAS, LAYOUTS, QuantBlocks

_I64, _PTR, _F32, _INT = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
_SUFFIXES = {torch.float32: "", torch.bfloat16: "_bf16"}  # activation dtype -> layer ops' entry suffix


class _Linear(ctypes.Structure):
    _fields_ = [("layout", _I64), ("isa", _I64), ("rows", _I64), ("cols", _I64), ("blocks", _PTR)]


class _Layer(ctypes.Structure):
    _fields_ = [("input_norm", _PTR), ("post_norm", _PTR), ("qkv", _Linear), ("o", _Linear),
                ("gate_up", _Linear), ("down", _Linear), ("k_cache", _PTR), ("v_cache", _PTR)]


class _Model(ctypes.Structure):
    _fields_ = [(name, _PTR) for name in ("matmul", "rms_norm", "rotary", "silu_and_mul", "decode")]
    _fields_ += [(name, _I64) for name in ("bf16_rows", "num_layers", "hidden", "q_size", "kv_size", "inter",
                                           "num_heads", "num_kv_heads", "head_size", "vocab", "block_stride",
                                           "head_stride", "row_stride", "block_size")]
    _fields_ += [("eps", _F32), ("scale", _F32), ("embedding", _PTR), ("final_norm", _PTR), ("cos_sin", _PTR),
                 ("head", _Linear), ("layers", ctypes.POINTER(_Layer))]


class _Step(ctypes.Structure):
    _fields_ = [("rows", _I64), ("ids", _PTR), ("positions", _PTR), ("tables", _PTR), ("table_stride", _I64),
                ("seq_lens", _PTR), ("slots", _PTR), ("logits", _PTR), ("threads", _INT)]


class Unsupported(Exception):
    """The model is not one the native step reproduces exactly; the message says why."""


def _address(fn: Any) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value


def _native_op(fn: Any, name: str) -> LayerOps:
    """The LayerOps behind a model's bound op `fn`, which must be LayerOps.`name`."""
    if getattr(fn, "__func__", None) is not getattr(LayerOps, name):
        raise Unsupported(f"{name} is not the plugin's native layer op")
    return fn.__self__


class ModelPlan:
    """A model's weights, caches and entry points as decode_step.cpp's Model structure."""

    def __init__(self, model: Any, kv_caches: list[torch.Tensor]) -> None:
        """Raises Unsupported where the native step would not run what the eager step runs."""
        _check_graph(model)
        self.dtype = model.model.embed_tokens.weight.dtype
        if self.dtype not in _SUFFIXES:
            raise Unsupported(f"activations of {self.dtype}")
        self.hidden = model.model.embed_tokens.weight.shape[1]
        self.max_rows = 1 << 30  # steps wider than a layer's crossover run its dense weight: eager
        self.caches = list(kv_caches)
        self.matmul = None  # the block kernel's entry point, one for every layer
        self.eps: float | None = None  # every norm's
        self._kept: list[torch.Tensor] = []  # every tensor the structures point into, kept alive with them
        layers = [self._layer(layer, cache) for layer, cache in zip(model.model.layers, self.caches)]
        self.layers = (_Layer * len(layers))(*layers)
        self.struct = self._model(model)

    def _model(self, model: Any) -> _Model:
        first = model.model.layers[0]
        attn, ops = first.self_attn, _native_op(first.input_layernorm._norm, "rms_norm")
        decode = attn._backend._kernel._fns[self.dtype]
        suffix = _SUFFIXES[self.dtype]
        _, block_stride, row_stride, head_stride, _ = self.caches[0].stride()
        self.eps = _norm_weight(model.model.norm, self.dtype, self.eps)
        cos_sin = model.cos_sin_cache
        if cos_sin.dtype != torch.float32 or not cos_sin.is_contiguous():
            raise Unsupported("the rotary table is not contiguous float32")
        head = self._linear(model.lm_head)
        if head.cols != self.hidden or model.model.norm.weight.shape != (self.hidden,):
            raise Unsupported("the head or final norm disagrees with the embedding on the hidden size")
        if self.hidden % 8 or first.mlp.down_proj.in_features % 8:
            raise Unsupported("hidden or intermediate sizes not a multiple of 8 (the layer ops' vectors)")
        return _Model(
            matmul=self.matmul, rms_norm=_address(ops._fns["tm_rms_norm", self.dtype]),
            rotary=_address(ops._fns["tm_rotary", self.dtype]),
            silu_and_mul=_address(ops._fns["tm_silu_and_mul", self.dtype]), decode=_address(decode),
            bf16_rows=int(suffix == "_bf16"), num_layers=len(self.layers), hidden=self.hidden,
            q_size=attn.q_size, kv_size=attn.kv_size, inter=first.mlp.down_proj.in_features,
            num_heads=attn.num_heads, num_kv_heads=attn.num_kv_heads, head_size=attn.head_size,
            vocab=model.model.embed_tokens.weight.shape[0], block_stride=block_stride, head_stride=head_stride,
            row_stride=row_stride, block_size=self.caches[0].shape[2], eps=self.eps, scale=attn.scale,
            embedding=self._ptr(model.model.embed_tokens.weight), final_norm=self._ptr(model.model.norm.weight),
            cos_sin=self._ptr(cos_sin), head=head, layers=self.layers,
        )

    def _layer(self, layer: Any, cache: torch.Tensor) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        for fn, name in ((layer.input_layernorm._norm, "rms_norm"), (layer.input_layernorm._add_norm,
                         "fused_add_rms_norm"), (layer.post_attention_layernorm._add_norm, "fused_add_rms_norm"),
                         (attn._rotary, "rotary"), (mlp._silu_and_mul, "silu_and_mul")):
            _native_op(fn, name)
        self.eps = _norm_weight(layer.input_layernorm, self.dtype, self.eps)
        _norm_weight(layer.post_attention_layernorm, self.dtype, self.eps)
        _check_attention(attn, cache, self.dtype, self.caches[0])
        planned = _Layer(input_norm=self._ptr(layer.input_layernorm.weight),
                         post_norm=self._ptr(layer.post_attention_layernorm.weight),
                         qkv=self._linear(attn.qkv_proj), o=self._linear(attn.o_proj),
                         gate_up=self._linear(mlp.gate_up_proj), down=self._linear(mlp.down_proj),
                         k_cache=self._ptr(cache[0]), v_cache=self._ptr(cache[1]))
        _check_shapes(planned, attn, self.hidden, cache)
        norms = (layer.input_layernorm.weight.shape, layer.post_attention_layernorm.weight.shape)
        if norms != ((self.hidden,), (self.hidden,)):
            raise Unsupported("norms of another size than the hidden state")
        return planned

    def _linear(self, linear: Any) -> _Linear:
        """A PackedLinear on the native blocks, no bias, no input order -> its _Linear."""
        if type(linear) is not PackedLinear or linear.bias is not None or linear.input_order is not None:
            raise Unsupported(f"{type(linear).__name__} with a bias or input order is not a plain packed layer")
        method, packed = linear.method, linear.packed
        if not isinstance(method, BlockLinearMethod) or not isinstance(packed.codes, QuantBlocks):
            raise Unsupported(f"a {linear.method.scheme} layer is not on the native block kernel")
        kernel = method._matmul
        if packed.codes.isa != kernel.isa:
            raise Unsupported("a layer packed for another path of the block kernel")
        matmul = _address(kernel._lib.tm_quant_matmul)
        if self.matmul not in (None, matmul):
            raise Unsupported("layers on different block kernel builds")
        self.matmul = matmul
        if packed.dense is not None:
            self.max_rows = min(self.max_rows, packed.max_packed_rows)
        return _Linear(layout=LAYOUTS.index(kernel.layout), isa=ISAS.index(kernel.isa), rows=packed.codes.rows,
                       cols=packed.codes.cols, blocks=self._ptr(packed.codes.data))

    def _ptr(self, tensor: torch.Tensor) -> int:
        """The address of `tensor`'s data, which stays valid while the plan lives."""
        self._kept.append(tensor)
        return tensor.data_ptr()

    def current(self, kv_caches: list[torch.Tensor]) -> bool:
        """Whether `kv_caches` are still the tensors this plan points at."""
        return len(kv_caches) == len(self.caches) and all(a is b for a, b in zip(kv_caches, self.caches))


def _check_graph(model: Any) -> None:
    """LlamaForCausalLM's forward and head over its own embedding, layers and norm, unchanged."""
    kind = type(model)
    if kind.forward is not LlamaForCausalLM.forward or kind.compute_logits is not LlamaForCausalLM.compute_logits:
        raise Unsupported(f"{kind.__name__} is not the Llama graph")
    inner = model.model
    if type(inner.embed_tokens) is not VocabEmbedding or type(inner.norm) is not RMSNorm:
        raise Unsupported("a sharded embedding or another final norm")
    for layer in inner.layers:
        parts = (type(layer), type(layer.self_attn), type(layer.mlp), type(layer.input_layernorm),
                 type(layer.post_attention_layernorm))
        if parts != (DecoderLayer, PagedSelfAttention, GatedMLP, RMSNorm, RMSNorm):
            raise Unsupported(f"a layer built of {[p.__name__ for p in parts]}")


def _check_shapes(layer: _Layer, attn: Any, hidden: int, cache: torch.Tensor) -> None:
    """Every weight's [N, K] as the layer's sizes say (decode_step.cpp sizes its buffers by them)."""
    inter, heads = layer.down.cols, (attn.num_heads, attn.num_kv_heads)
    want = {"qkv": (attn.q_size + 2 * attn.kv_size, hidden), "o": (hidden, attn.q_size),
            "gate_up": (2 * inter, hidden), "down": (hidden, inter)}
    got = {name: (getattr(layer, name).rows, getattr(layer, name).cols) for name in want}
    sizes = (attn.q_size, attn.kv_size, tuple(cache.shape[3:]))
    if got != want or sizes != (heads[0] * attn.head_size, heads[1] * attn.head_size, (heads[1], attn.head_size)):
        raise Unsupported(f"weights {got} do not match the layer's sizes {want}")


def _norm_weight(norm: Any, dtype: torch.dtype, eps: float | None) -> float:
    """The norm's eps, checked equal to `eps` (when given) and its weight contiguous in `dtype`."""
    if norm.weight.dtype != dtype or not norm.weight.is_contiguous():
        raise Unsupported(f"a norm weight of {norm.weight.dtype} in a {dtype} model")
    if eps is not None and norm.eps != eps:
        raise Unsupported("norms with different eps")
    return norm.eps


def _check_attention(attn: Any, cache: torch.Tensor, dtype: torch.dtype, first: torch.Tensor) -> None:
    """The layer's backend is this plugin's, decoding natively under `dtype` activations over a cache
    shaped as the first (of the kernel's cache dtype: `dtype`, or a narrower one it converts into)."""
    backend = attn._backend
    if type(backend) is not CpuAttentionBackend or backend._kernel is None or backend.window or backend.soft_cap:
        raise Unsupported("a layer whose decode is not the native paged kernel (no window, no soft cap)")
    if cache.dtype != backend._kernel.cache_dtype or dtype not in backend._kernel._fns:
        raise Unsupported(f"a {cache.dtype} cache under {dtype} activations")
    if cache.stride() != first.stride() or cache.shape != first.shape or cache.stride(-1) != 1:
        raise Unsupported("layers with differently laid out caches")
    if attn._functional or attn.head_size % 8:
        raise Unsupported("a functional cache or a head size not a multiple of 8")


class DecodeStep:
    """tm_decode_step over one loaded library."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._fn = lib.tm_decode_step
        self._fn.argtypes, self._fn.restype = [ctypes.POINTER(_Model), ctypes.POINTER(_Step)], _INT

    def __call__(self, plan: ModelPlan, input_ids: torch.Tensor, positions: torch.Tensor,
                 metadata: CpuAttentionMetadata, threads: int | None = None) -> torch.Tensor | None:
        """ids, positions int64 [M] of a pure-decode step -> float32 logits [M, V]; None for an id
        outside the vocabulary (the eager step reports it)."""
        decode = metadata.decode
        logits = torch.empty(input_ids.shape[0], plan.struct.head.rows, dtype=torch.float32)
        step = _Step(rows=input_ids.shape[0], ids=input_ids.data_ptr(), positions=positions.data_ptr(),
                     tables=decode.block_table.data_ptr(), table_stride=decode.block_table.shape[1],
                     seq_lens=decode.seq_lens.data_ptr(), slots=metadata.slot_mapping.data_ptr(),
                     logits=logits.data_ptr(), threads=threads or torch.get_num_threads())
        return logits if self._fn(ctypes.byref(plan.struct), ctypes.byref(step)) == 0 else None


def decode_step() -> DecodeStep | None:
    """The native step, or None where decode_step.cpp cannot build."""
    lib = load_kernel("decode_step.cpp")
    return DecodeStep(lib) if lib is not None else None
