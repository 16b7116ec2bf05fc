"""The batched Sampler: greedy, seeds, truncation statistics, min_tokens, logprobs, the op seam."""

import torch
from transformers import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from tokenmill.ops import OpRegistry
from tokenmill.ops import reference
from tokenmill.sampling import Sampler, SamplingParams, SamplingRow, new_generator

EOS = 3


def _row(params, output=(), prompt=(1, 2), seed_generator=True):
    generator = new_generator(params.seed, "cpu") if seed_generator else None
    return SamplingRow(params, list(prompt), list(output), generator)


def _logits(batch, vocab, seed=0, scale=2.0):
    return torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed)) * scale


def test_all_greedy_is_argmax():
    logits = _logits(8, 500)
    out = Sampler([EOS])(logits.clone(), [_row(SamplingParams(temperature=0.0)) for _ in range(8)])
    assert out.token_ids == logits.argmax(dim=-1).tolist()
    assert out.logprobs == [None] * 8 and out.sampled_logprobs == [None] * 8


def test_top_k_1_equals_greedy_in_a_mixed_batch():
    logits = _logits(12, 2000, seed=1)
    params = [SamplingParams(temperature=0.9, top_k=1, seed=i if i % 2 else None) for i in range(6)]
    params += [SamplingParams(temperature=0.0) for _ in range(6)]
    out = Sampler([EOS])(logits.clone(), [_row(p) for p in params])
    assert out.token_ids == logits.argmax(dim=-1).tolist()


def _run_steps(logits_per_step, rows, target):
    sampler, tokens = Sampler([EOS]), []
    for logits in logits_per_step:
        out = sampler(logits.clone(), rows)
        tokens.append(out.token_ids[target])
        for row, token in zip(rows, out.token_ids):
            row.output_token_ids.append(token)
    return tokens


def test_same_seed_same_tokens_whatever_the_batch():
    vocab, steps = 1000, 10
    target_logits = [_logits(1, vocab, seed=100 + s, scale=0.5) for s in range(steps)]
    target = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, repetition_penalty=1.1)
    alone = _run_steps(target_logits, [_row(target)], 0)
    others = [SamplingParams(temperature=0.7), SamplingParams(temperature=0.0), SamplingParams(seed=9, top_k=50)]
    for position in (0, 2, 3):
        mates = [_row(p) for p in others]
        rows = mates[:position] + [_row(target)] + mates[position:]
        per_step = []
        for s in range(steps):
            noise = _logits(4, vocab, seed=500 + s + position)
            per_step.append(torch.cat([noise[:position], target_logits[s], noise[position:3]]))
        assert _run_steps(per_step, rows, position) == alone
    assert len(set(alone)) > 1  # it really sampled


def test_different_seeds_give_distinct_samples():
    vocab, steps, n = 1000, 8, 4
    rows = [_row(SamplingParams(temperature=1.0, seed=seed)) for seed in range(n)]
    sampler, seqs = Sampler([EOS]), [[] for _ in range(n)]
    for s in range(steps):
        shared = _logits(1, vocab, seed=s, scale=0.5).expand(n, vocab)
        for i, token in enumerate(sampler(shared.clone(), rows).token_ids):
            seqs[i].append(token)
    assert len({tuple(seq) for seq in seqs}) == n


def _frequencies(logits_row, params, draws=20000, seed=0):
    torch.manual_seed(seed)  # unseeded rows use the global RNG
    batch = logits_row.expand(draws, -1).clone()
    out = Sampler([EOS])(batch, [_row(params) for _ in range(draws)])
    return torch.bincount(torch.tensor(out.token_ids), minlength=logits_row.shape[-1]).double() / draws


def test_temperature_frequencies_match_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -0.5]])
    for temperature in (0.5, 1.0, 2.0):
        freq = _frequencies(logits, SamplingParams(temperature=temperature))
        expected = torch.softmax(logits[0].double() / temperature, dim=-1)
        assert (freq - expected).abs().max() < 0.015, (temperature, freq, expected)


def _hf_expected(logits, warper, temperature):
    warped = warper(torch.zeros(1, 1, dtype=torch.int64), logits / temperature)
    return torch.softmax(warped[0].double(), dim=-1)


def test_top_p_min_p_top_k_exclude_what_hf_excludes():
    logits = torch.log(torch.tensor([[0.4, 0.25, 0.15, 0.1, 0.06, 0.04]]))
    cases = [
        (SamplingParams(top_p=0.7, temperature=1.0), TopPLogitsWarper(0.7)),
        (SamplingParams(min_p=0.3, temperature=1.0), MinPLogitsWarper(0.3)),
        (SamplingParams(top_k=3, temperature=0.8), TopKLogitsWarper(3)),
    ]
    for params, warper in cases:
        freq = _frequencies(logits, params)
        expected = _hf_expected(logits, warper, params.temperature)
        assert torch.equal(freq > 0, expected > 0), (params, freq, expected)
        assert (freq - expected).abs().max() < 0.015, (params, freq, expected)


def test_min_tokens_masks_eos_and_stop_token_ids():
    logits = torch.zeros(4, 10)
    logits[:, EOS] = 10.0
    logits[:, 7] = 9.0
    logits[:, 5] = 8.0
    rows = [
        _row(SamplingParams(temperature=0.0, min_tokens=2), output=[1]),  # EOS masked
        _row(SamplingParams(temperature=0.0, min_tokens=2), output=[1, 1]),  # reached: EOS allowed
        _row(SamplingParams(temperature=0.0, min_tokens=2, stop_token_ids=[7]), output=[]),  # both masked
        _row(SamplingParams(temperature=0.0, min_tokens=2, ignore_eos=True), output=[]),  # EOS not a stop
    ]
    assert Sampler([EOS])(logits.clone(), rows).token_ids == [7, EOS, 5, EOS]


def test_logprobs_are_raw_model_logprobs_with_top_n():
    logits = _logits(3, 300, seed=4)
    rows = [
        _row(SamplingParams(temperature=0.7, seed=5, logprobs=4, repetition_penalty=1.5), output=[1, 2]),
        _row(SamplingParams(temperature=0.0)),
        _row(SamplingParams(temperature=0.0, logprobs=0)),
    ]
    out = Sampler([EOS])(logits.clone(), rows)
    ref = torch.log_softmax(logits.double(), dim=-1)
    for i in (0, 2):
        token = out.token_ids[i]
        entry = out.logprobs[i]
        assert abs(out.sampled_logprobs[i] - ref[i, token].item()) < 1e-5
        assert entry[token][1] == int((ref[i] > ref[i, token]).sum()) + 1
        top = ref[i].topk(rows[i].params.logprobs).indices.tolist()
        assert set(entry) == set(top) | {token}
    assert out.logprobs[1] is None and out.sampled_logprobs[1] is None
    assert out.token_ids[1] == logits[1].argmax().item()


def test_top_k_top_p_goes_through_the_op_registry():
    calls = []

    def recording_top_k_top_p(logits, top_k, top_p):
        calls.append((top_k, top_p))
        return reference.top_k_top_p(logits, top_k, top_p)

    sampler = Sampler([EOS], OpRegistry({"top_k_top_p": recording_top_k_top_p}))
    rows = [_row(SamplingParams(top_k=5)), _row(SamplingParams(top_p=0.9)), _row(SamplingParams())]
    sampler(_logits(3, 100), rows)
    sampler(_logits(2, 100), rows[2:] * 2)  # no truncation asked for: the op is skipped
    assert len(calls) == 2  # the top-k row on its candidates, then the others on the whole vocabulary
    (k_narrow, p_narrow), (k_wide, p_wide) = calls
    assert k_narrow.tolist() == [5] and p_narrow is None
    assert k_wide is None and torch.allclose(p_wide, torch.tensor([0.9, 1.0]))


def test_top_k_rows_same_seed_same_tokens_whatever_the_batch():
    vocab, steps = 5000, 8
    target = SamplingParams(temperature=1.0, top_k=40, top_p=0.9, min_p=0.01, seed=77)
    target_logits = [_logits(1, vocab, seed=300 + s, scale=0.5) for s in range(steps)]
    alone = _run_steps(target_logits, [_row(target)], 0)
    mates = [SamplingParams(temperature=0.7, top_k=400), SamplingParams(temperature=0.0), SamplingParams(seed=3)]
    rows = [_row(p) for p in mates[:1]] + [_row(target)] + [_row(p) for p in mates[1:]]
    per_step = [torch.cat([_logits(1, vocab, seed=900 + s), target_logits[s], _logits(2, vocab, seed=950 + s)])
                for s in range(steps)]
    assert _run_steps(per_step, rows, 1) == alone
    assert len(set(alone)) > 1


def test_top_k_with_top_p_and_min_p_match_hf():
    logits = torch.log(torch.tensor([[0.3, 0.25, 0.15, 0.1, 0.08, 0.06, 0.04, 0.02]]))
    cases = [
        (SamplingParams(top_k=5, top_p=0.6, temperature=1.0), [TopKLogitsWarper(5), TopPLogitsWarper(0.6)]),
        (SamplingParams(top_k=6, min_p=0.3, temperature=0.9), [MinPLogitsWarper(0.3), TopKLogitsWarper(6)]),
    ]
    for params, warpers in cases:
        freq = _frequencies(logits, params)
        warped = logits / params.temperature
        for warper in warpers:
            warped = warper(torch.zeros(1, 1, dtype=torch.int64), warped)
        expected = torch.softmax(warped[0].double(), dim=-1)
        assert torch.equal(freq > 0, expected > 0), (params, freq, expected)
        assert (freq - expected).abs().max() < 0.015, (params, freq, expected)
