"""The KV cache's bookkeeping in plain integers: blocks, reference counts, prefix hashes."""

from tokenmill.kv.block_pool import BlockPool, KVBlock
from tokenmill.kv.kv_cache_manager import KVCacheManager, PrefixHit

__all__ = ["BlockPool", "KVBlock", "KVCacheManager", "PrefixHit"]
