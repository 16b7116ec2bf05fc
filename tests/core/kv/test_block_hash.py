"""Block hashes: chained over the parent, content-addressed, stable across calls."""

import hashlib
import struct

from tokenmill.kv.block_hash import ROOT_HASH, extend_block_hashes, hash_block_tokens


def test_matches_sha256_of_parent_and_packed_tokens():
    expected = hashlib.sha256(b"parent" + struct.pack("<3q", 1, 2, 70000)).digest()
    assert hash_block_tokens(b"parent", [1, 2, 70000]) == expected


def test_chain_depends_on_every_earlier_block():
    a, b = [], []
    extend_block_hashes(a, [1, 2, 3, 4, 5, 6, 7, 8], 4, 2)
    extend_block_hashes(b, [9, 2, 3, 4, 5, 6, 7, 8], 4, 2)
    assert a[1] != b[1], "same second block under a different first block must hash differently"
    assert a[1] == hash_block_tokens(hash_block_tokens(ROOT_HASH, [1, 2, 3, 4]), [5, 6, 7, 8])


def test_extend_is_incremental():
    tokens = list(range(12))
    whole, parts = [], []
    extend_block_hashes(whole, tokens, 4, 3)
    extend_block_hashes(parts, tokens, 4, 1)
    extend_block_hashes(parts, tokens, 4, 3)
    assert whole == parts and len(whole) == 3
