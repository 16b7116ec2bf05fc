"""TritonAttentionBackend: the AttentionBackend Protocol over the Triton paged-attention kernels."""

from __future__ import annotations

import torch

from tokenmill.interfaces import AttentionBatch, AttentionSpec

from tokenmill_triton import metadata as md_mod
from tokenmill_triton.cache_write import reshape_and_cache, rows_contiguous
from tokenmill_triton.decode_attention import decode_attention, decode_block_n
from tokenmill_triton.metadata import DecodeShape, DecodeWorkspace, TritonAttentionMetadata
from tokenmill_triton.prefill_attention import prefill_attention

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MIN_BLOCK_SIZE = 16
MAX_GROUP = 64  # query heads per KV head that one decode program holds


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the interpreter on the host: few splits keep tests quick


class TritonAttentionBackend:
    """Paged attention in Triton over the (2, N, S, Hkv, D) cache layout, for one AttentionSpec.

    :param spec: heads, head size, block size and dtype of the model's attention.
    :param device: where metadata tensors go (the GPU, or the host under TRITON_INTERPRET=1).
    :param tiles: a plugin's tile choices, an object with `decode` (DecodeTiles) and `prefill`
        (PrefillTiles) for this head size, and `num_sms` (compute units to fill); None: the CUDA choices.
    """

    name = "triton"
    supports_sliding_window = True  # optional contract member: spec.sliding_window is honoured
    supports_logits_soft_cap = True  # optional contract member: spec.logits_soft_cap is honoured

    def __init__(self, spec: AttentionSpec, device: torch.device | str, tiles=None) -> None:
        self.spec = spec
        self.window = getattr(spec, "sliding_window", None)
        self.soft_cap = getattr(spec, "logits_soft_cap", None)
        self.device = torch.device(device)
        self.tiles = tiles
        self.shape = DecodeShape(
            spec.num_heads, spec.num_kv_heads, spec.head_size, spec.block_size,
            tiles.num_sms if tiles else _num_sms(self.device),
            tiles.decode.block_n if tiles else decode_block_n(spec.head_size),
        )
        self.workspace = DecodeWorkspace(self.shape, self.device)
        self._arange = torch.arange(256, dtype=torch.int32, device=self.device)  # grown on demand

    def unsupported_reasons(self, spec: AttentionSpec) -> list[str]:
        """Head size a power of two in 16..256, block size >= 16 (power of two), a float dtype, GQA."""
        reasons = []
        d = spec.head_size
        if d < 16 or d > 256 or d & (d - 1):
            reasons.append(f"head size {d} is not a power of two between 16 and 256 (64, 128 and 256 are tuned)")
        if spec.block_size < MIN_BLOCK_SIZE or spec.block_size & (spec.block_size - 1):
            reasons.append(f"block size {spec.block_size} must be a power of two >= {MIN_BLOCK_SIZE}; pass --block-size 16")
        if spec.dtype not in SUPPORTED_DTYPES:
            reasons.append(f"dtype {spec.dtype} is not float32, bfloat16 or float16")
        if spec.kv_cache_dtype != spec.dtype:  # the kernels read and write the cache in the model dtype
            reasons.append(f"a {spec.kv_cache_dtype} KV cache under a {spec.dtype} model is not supported by the "
                           f"Triton kernels yet; use --kv-cache-dtype auto")
        cap = getattr(spec, "logits_soft_cap", None)
        if cap is not None and not cap > 0:
            reasons.append(f"logits_soft_cap must be positive, got {cap!r}")
        window = getattr(spec, "sliding_window", None)
        if window is not None and (not isinstance(window, int) or window < 1):
            reasons.append(f"sliding_window must be a positive number of keys, got {window!r}")
        if spec.num_kv_heads < 1 or spec.num_heads % spec.num_kv_heads:
            reasons.append(f"{spec.num_heads} query heads do not divide into {spec.num_kv_heads} KV heads")
        elif spec.num_heads // spec.num_kv_heads > MAX_GROUP:
            reasons.append(f"{spec.num_heads // spec.num_kv_heads} query heads per KV head exceeds {MAX_GROUP}")
        return reasons

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        """(2, N, S, Hkv, D): keys in [0], values in [1], one block of S tokens per dim-1 index."""
        s = self.spec
        return (2, num_blocks, s.block_size, s.num_kv_heads, s.head_size)

    def build_metadata(self, batch: AttentionBatch) -> TritonAttentionMetadata:
        """Split requests into decode and prefill, choose context splits, lend partials from the workspace."""
        num = len(batch.query_lens_cpu)
        if num > self._arange.shape[0]:
            self._arange = torch.arange(2 * num, dtype=torch.int32, device=self.device)
        return md_mod.build(batch, self.workspace, self._arange)

    def static_metadata(self, batch_size: int, max_blocks_per_seq: int) -> TritonAttentionMetadata:
        """Fixed-address pure-decode metadata for graph capture; refill it with `fill_static`."""
        return md_mod.static_decode_metadata(batch_size, max_blocks_per_seq, self.shape, self.device)

    def forward(
        self,
        query: torch.Tensor,  # [T, Hq, D]
        key: torch.Tensor,  # [T, Hkv, D]
        value: torch.Tensor,  # [T, Hkv, D]
        kv_cache: torch.Tensor,  # [2, N, S, Hkv, D]
        metadata: TritonAttentionMetadata,
        scale: float,
    ) -> torch.Tensor:  # [T, Hq, D]
        """Write the new K/V through slot_mapping, then run decode and prefill kernels."""
        reshape_and_cache(key, value, kv_cache, metadata.slot_mapping)
        query = rows_contiguous(query)
        out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
        tiles = self.tiles
        if metadata.num_decodes:
            decode_attention(query, kv_cache, out, metadata, scale, self.window, self.soft_cap,
                             tiles.decode if tiles else None)
        if metadata.num_prefills:
            prefill_attention(query, kv_cache, out, metadata, scale, self.window, self.soft_cap,
                              tiles.prefill if tiles else None)
        return out
