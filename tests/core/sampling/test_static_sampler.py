"""The static-shape sampler: padded batches, greedy rows by `where`, truncation against the reference warpers."""

from __future__ import annotations

import torch
from transformers import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from tokenmill.sampling import Sampler, SamplingParams, SamplingRow, new_generator

EOS = 3


def _row(params: SamplingParams) -> SamplingRow:
    return SamplingRow(params, [1, 2], [], new_generator(params.seed, "cpu"))


def _logits(batch: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed)) * 2.0


def _static(logits: torch.Tensor, rows: list[SamplingRow]) -> list[int]:
    return Sampler([EOS], static=True)(logits.clone(), rows).token_ids


def test_padded_greedy_batch_returns_the_real_rows_argmax():
    logits = _logits(8, 700)  # 5 real rows, 3 padding rows
    assert _static(logits, [_row(SamplingParams(temperature=0.0)) for _ in range(5)]) == logits[:5].argmax(-1).tolist()


def test_mixed_greedy_and_random_rows_keep_greedy_exact():
    logits = _logits(8, 700, seed=1)
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0, seed=5),
              SamplingParams(temperature=0.0), SamplingParams(temperature=0.7, top_k=1, seed=6)]
    tokens = _static(logits, [_row(p) for p in params])
    argmax = logits.argmax(-1).tolist()
    assert tokens[0] == argmax[0] and tokens[2] == argmax[2] and tokens[3] == argmax[3]  # top_k=1 is greedy too


def _allowed(logits_row: torch.Tensor, params: SamplingParams) -> set[int]:
    """The tokens transformers' warpers leave finite after temperature, for one row."""
    x = (logits_row / params.temperature).unsqueeze(0)
    if params.min_p > 0:
        x = MinPLogitsWarper(params.min_p)(None, x)
    if params.top_k > 0:
        x = TopKLogitsWarper(params.top_k)(None, x)
    if params.top_p < 1:
        x = TopPLogitsWarper(params.top_p)(None, x)
    return set(torch.isfinite(x[0]).nonzero().flatten().tolist())


def test_draws_stay_inside_each_rows_truncation_on_both_paths():
    vocab = 300
    params = [SamplingParams(temperature=0.8, top_k=7, seed=1), SamplingParams(temperature=1.2, top_p=0.5, seed=2),
              SamplingParams(temperature=1.0, min_p=0.3, seed=3), SamplingParams(temperature=1.0, top_k=20, top_p=0.8, seed=4)]
    for batch in (params, params[:1] + params[3:]):  # with a top_k-off row (whole vocabulary), and without (top K)
        for step in range(30):
            logits = _logits(6, vocab, seed=step)
            tokens = _static(logits, [_row(p) for p in batch])
            for i, p in enumerate(batch):
                assert tokens[i] in _allowed(logits[i], p), (p, step)


def test_frequencies_follow_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0] + [-30.0] * 12] * 4)  # [4, 16]
    rows = [_row(SamplingParams(temperature=1.0, top_k=4)) for _ in range(4)]
    torch.manual_seed(0)
    counts = torch.zeros(16)
    for _ in range(500):
        for token in _static(logits, rows):
            counts[token] += 1
    expected = torch.softmax(logits[0], -1) * 2000
    assert ((counts - expected).abs() <= 4 * expected.sqrt() + 1).all(), (counts[:4], expected[:4])  # 4 sigma


def test_a_seeded_row_repeats_its_draw():
    logits = _logits(4, 500, seed=9)
    params = [SamplingParams(temperature=1.0, top_k=50, seed=77), SamplingParams(temperature=0.9, seed=78)]
    first = _static(logits, [_row(p) for p in params])
    assert _static(logits, [_row(p) for p in params]) == first
