"""The torch dequantizers for Q4_0/Q4_1/Q8_0 give exactly the gguf package's float32 values."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType, dequantize, quants

from tokenmill.loaders.gguf_blocks import dequantize_blocks

QUANTIZABLE = (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q8_0)  # test_gguf_low_bit: the rest


@pytest.mark.parametrize("kind", QUANTIZABLE, ids=lambda k: k.name)
def test_matches_the_gguf_package_bit_for_bit(kind):
    rng = np.random.default_rng(kind.value)
    weights = rng.standard_normal((12, 96)).astype(np.float32) * np.logspace(-3, 1, 96, dtype=np.float32)
    weights[3, :32] = 0.0  # a block with scale 0
    raw = quants.quantize(weights, kind)  # uint8 [12, row bytes]
    ours = dequantize_blocks(raw, kind)
    assert ours.dtype == np.float32 and ours.shape == (12, 96)
    assert np.array_equal(ours, dequantize(raw, kind))


def test_keeps_leading_dimensions():
    raw = quants.quantize(np.ones((2, 3, 64), dtype=np.float32), GGMLQuantizationType.Q8_0)
    assert dequantize_blocks(raw, GGMLQuantizationType.Q8_0).shape == (2, 3, 64)
