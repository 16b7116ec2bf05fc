"""argmax_rows: the blocked CPU argmax equals torch.argmax, ties, -inf rows and NaN included."""

import pytest
import torch

from tokenmill_cpu.argmax import argmax_rows


@pytest.mark.parametrize("shape", [(64, 49152), (16, 49153), (5, 70000), (1, 50000), (8, 300)])
def test_matches_torch_argmax(shape):
    rows, vocab = shape
    x = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(rows))
    x[0, vocab - 1] = 50.0  # the maximum in the ragged tail block
    if rows > 4:
        x[1, 5] = x[1, vocab // 2] = 50.0  # a tie across blocks: the first index wins
        x[2] = float("-inf")
        x[3, 7] = float("nan")
        x[4, 2000:2003] = 50.0  # a tie inside one block
    assert torch.equal(argmax_rows(x), x.argmax(dim=-1))
