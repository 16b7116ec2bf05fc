"""RowTensors: a batch's parameter tensor is reused while the rows stay, rebuilt when they change."""

import torch

from tokenmill.sampling import SamplingParams, SamplingRow
from tokenmill.sampling.row_tensors import RowTensors


def _rows(*temperatures):
    return [SamplingRow(SamplingParams(temperature=t), [1], []) for t in temperatures]


def test_same_rows_reuse_the_tensor_and_new_rows_rebuild_it():
    cache, cpu = RowTensors(), torch.device("cpu")
    rows = _rows(0.5, 0.7)
    first = cache.get(rows, "temperature", torch.float32, cpu)
    assert first.tolist() == [0.5, 0.699999988079071]
    assert cache.get(list(rows), "temperature", torch.float32, cpu) is first  # same rows, new list
    swapped = cache.get(rows[::-1], "temperature", torch.float32, cpu)
    assert swapped is not first and swapped.tolist() == [0.699999988079071, 0.5]
    other = _rows(0.5, 0.7)  # equal params, other rows: rebuilt, never confused by identity
    assert cache.get(other, "temperature", torch.float32, cpu) is not swapped


def test_groups_keep_separate_entries():
    cache, cpu = RowTensors(), torch.device("cpu")
    a, b = _rows(0.3), _rows(0.9, 0.4)
    ta = cache.get(a, "temperature", torch.float32, cpu, "narrow")
    tb = cache.get(b, "temperature", torch.float32, cpu, "wide")
    assert cache.get(a, "temperature", torch.float32, cpu, "narrow") is ta
    assert cache.get(b, "temperature", torch.float32, cpu, "wide") is tb
