"""Q2_K, Q3_K, IQ4_XS and IQ4_NL: our torch dequantizers give the gguf package's float32 values bit for bit.

gguf has no quantizer for these types, so the blocks are random bytes with finite float16 scales
(every byte pattern is a valid block once its scales are finite), which reaches every code, every
sub-scale and both signs of the scales.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import dequantize

from tokenmill.loaders.gguf_blocks import FAST_TYPES, dequantize_blocks

# type -> (block bytes, weights per block, byte offsets of its float16 scales)
LAYOUTS = {Q.Q2_K: (84, 256, (80, 82)), Q.Q3_K: (110, 256, (108,)), Q.IQ4_XS: (136, 256, (0,)),
           Q.IQ4_NL: (18, 32, (0,))}


def random_blocks(kind: Q, rows: int, blocks_per_row: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [rows, blocks_per_row * block bytes] of random blocks with finite float16 scales."""
    size, _, scale_at = LAYOUTS[kind]
    raw = rng.integers(0, 256, (rows, blocks_per_row, size), dtype=np.uint8)
    for at in scale_at:
        scales = (rng.standard_normal((rows, blocks_per_row)) * 0.05).astype(np.float16)
        raw[..., at : at + 2] = scales.view(np.uint8).reshape(rows, blocks_per_row, 2)
    raw[0, 0, scale_at[0] : scale_at[0] + 2] = 0  # one block with scale 0
    return raw.reshape(rows, blocks_per_row * size)


@pytest.mark.parametrize("kind", list(LAYOUTS), ids=lambda k: k.name)
def test_matches_the_gguf_package_bit_for_bit(kind):
    assert kind in FAST_TYPES
    rng = np.random.default_rng(kind.value)
    raw = random_blocks(kind, 7, 3, rng)
    ours = dequantize_blocks(raw, kind)
    want = dequantize(raw, kind)
    assert ours.dtype == np.float32 and ours.shape == (7, 3 * LAYOUTS[kind][1]) == want.shape
    assert np.array_equal(ours.view(np.uint32), want.astype(np.float32).view(np.uint32))


def test_keeps_leading_dimensions():
    raw = random_blocks(Q.Q3_K, 6, 2, np.random.default_rng(0)).reshape(2, 3, -1)
    assert dequantize_blocks(raw, Q.Q3_K).shape == (2, 3, 512)
