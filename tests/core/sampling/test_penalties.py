"""Penalties against Hugging Face's processors and the OpenAI formula."""

import torch
from transformers import RepetitionPenaltyLogitsProcessor

from tokenmill.sampling import Sampler, SamplingParams, SamplingRow
from tokenmill.sampling.penalties import apply_penalties

V = 64


def _rows():
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, V, (n,), generator=g).tolist() for n in (5, 0, 12)]
    outputs = [torch.randint(0, V, (n,), generator=g).tolist() for n in (7, 3, 0)]
    return prompts, outputs, torch.randn(3, V, generator=g) * 3


def test_repetition_penalty_matches_hf_processor():
    prompts, outputs, logits = _rows()
    penalties = [1.3, 0.7, 2.0]
    ours = apply_penalties(logits.clone(), prompts, outputs, penalties, [0.0] * 3, [0.0] * 3)
    for r in range(3):
        seq = torch.tensor([prompts[r] + outputs[r]], dtype=torch.int64)
        ref = RepetitionPenaltyLogitsProcessor(penalties[r])(seq, logits[r : r + 1].clone())
        torch.testing.assert_close(ours[r : r + 1], ref)


def _openai_reference(logits_row, output, presence, frequency):
    expected = logits_row.clone()
    for token in set(output):  # prompt tokens are not penalised
        count = output.count(token)
        expected[token] -= count * frequency + (1.0 if count > 0 else 0.0) * presence
    return expected


def _hf_repetition(penalty, prompt, output, logits_row):
    return RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([prompt + output]), logits_row.unsqueeze(0).clone())[0]


def test_presence_and_frequency_follow_openai_formula():
    prompts, outputs, logits = _rows()
    presence, frequency = [0.5, -1.0, 2.0], [0.25, 1.5, -0.5]
    ours = apply_penalties(logits.clone(), prompts, outputs, [1.0] * 3, presence, frequency)
    for r in range(3):
        torch.testing.assert_close(ours[r], _openai_reference(logits[r], outputs[r], presence[r], frequency[r]))


def test_all_three_penalties_together():
    prompts, outputs, logits = _rows()
    ours = apply_penalties(logits.clone(), prompts, outputs, [1.5, 0.8, 1.2], [0.3, 0.0, 1.0], [0.7, -0.2, 0.0])
    for r, (rep, pres, freq) in enumerate([(1.5, 0.3, 0.7), (0.8, 0.0, -0.2), (1.2, 1.0, 0.0)]):
        expected = _openai_reference(_hf_repetition(rep, prompts[r], outputs[r], logits[r]), outputs[r], pres, freq)
        torch.testing.assert_close(ours[r], expected)


def test_sampler_applies_penalties_before_greedy_choice():
    prompts, outputs, logits = _rows()
    for r in (0, 1):  # the unpenalised favourite was already generated
        outputs[r] += [int(logits[r].argmax())] * 2
    params = [
        SamplingParams(temperature=0.0, repetition_penalty=5.0),
        SamplingParams(temperature=0.0, frequency_penalty=2.0, presence_penalty=1.0),
        SamplingParams(temperature=0.0),
    ]
    rows = [SamplingRow(p, prompts[i], outputs[i], None) for i, p in enumerate(params)]
    got = Sampler(eos_token_ids=[])(logits.clone(), rows).token_ids
    expected = [
        _hf_repetition(5.0, prompts[0], outputs[0], logits[0]).argmax().item(),
        _openai_reference(logits[1], outputs[1], 1.0, 2.0).argmax().item(),
        logits[2].argmax().item(),
    ]
    assert got == expected
    assert all(expected[r] != logits[r].argmax().item() for r in (0, 1))  # the penalties changed the choice
