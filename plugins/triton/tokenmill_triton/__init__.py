"""Triton kernels for tokenmill's GPU plugins: paged attention, its metadata, and fused ops.

Importing this package is cheap: the kernel modules (and triton itself) load only when a submodule
is imported, so a plugin can describe itself on a machine without triton or a GPU. Submodules:
`backend` (TritonAttentionBackend), `metadata`, `cache_write`, `decode_attention`,
`prefill_attention`, `norm`, `rotary`, `activation`, `sampling`, `op_table` (the overrides),
`gemv` (batch-1 linears) and `pdl` (programmatic dependent launch of all of these).
"""

__version__ = "0.1.0"
