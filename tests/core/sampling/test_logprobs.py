"""position_logprobs and new_generator against plain torch."""

import torch

from tokenmill.sampling import new_generator, position_logprobs


def test_position_logprobs_match_log_softmax_and_ranks():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 40, generator=g)
    targets = torch.randint(0, 40, (6,), generator=g)
    out = position_logprobs(logits, targets, num_top=3)
    ref = torch.log_softmax(logits.double(), dim=-1)
    for i, entry in enumerate(out):
        t = targets[i].item()
        lp, rank = entry[t]
        assert abs(lp - ref[i, t].item()) < 1e-5
        assert rank == int((ref[i] > ref[i, t]).sum()) + 1
        top = ref[i].topk(3).indices.tolist()
        for k, tok in enumerate(top):
            assert tok in entry
            if tok != t:
                assert entry[tok][1] == k + 1
        assert set(entry) == set(top) | {t}
        assert next(iter(entry)) == t  # the chosen token comes first


def test_position_logprobs_zero_top_and_long_inputs():
    logits = torch.randn(1100, 17)  # more rows than one chunk
    targets = logits.argmax(dim=-1)
    out = position_logprobs(logits, targets, num_top=0)
    assert len(out) == 1100
    assert all(list(e) == [targets[i].item()] and e[targets[i].item()][1] == 1 for i, e in enumerate(out))


def test_new_generator_is_reproducible_and_none_when_unseeded():
    assert new_generator(None, "cpu") is None
    a = torch.rand(5, generator=new_generator(123, "cpu"))
    b = torch.rand(5, generator=new_generator(123, "cpu"))
    c = torch.rand(5, generator=new_generator(124, "cpu"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert new_generator(-1, torch.device("cpu")) is not None  # any Python int is a valid seed
