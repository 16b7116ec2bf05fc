"""The content hash of a full KV block, chained over its parent block's hash.

Why SHA-256 over packed int64s rather than Python's hash(): a hit hands one request the KV that
another request computed, so a collision would silently give wrong outputs. A 256-bit digest makes
that negligible, is stable across processes and Python versions (so caches could be shared later),
and costs about a microsecond per 16-token block.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

ROOT_HASH = b""  # the "parent" of a sequence's first block


def hash_block_tokens(parent_hash: bytes, token_ids: Sequence[int]) -> bytes:
    """Digest of (parent block's digest, this block's token ids); equal digests mean equal prefixes."""
    digest = hashlib.sha256(parent_hash)
    digest.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    return digest.digest()


def extend_block_hashes(hashes: list[bytes], token_ids: Sequence[int], block_size: int, num_blocks: int) -> None:
    """Append to `hashes` the digests of full blocks len(hashes)..num_blocks-1 of `token_ids`."""
    parent = hashes[-1] if hashes else ROOT_HASH
    for index in range(len(hashes), num_blocks):
        parent = hash_block_tokens(parent, token_ids[index * block_size : (index + 1) * block_size])
        hashes.append(parent)
