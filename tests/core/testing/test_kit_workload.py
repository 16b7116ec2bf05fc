"""The kit's end-to-end workload is well conditioned: no greedy choice on the CPU reference is a near-tie."""

from __future__ import annotations

from tokenmill.plugin_manager import load_plugins
from tokenmill.sampling.params import SamplingParams
from tokenmill.testing import engine_probe
from tokenmill.testing.tiny_model import write_tiny_llama

MIN_MARGIN = 0.1  # logprob gap between the chosen token and the runner-up, far above float32 rounding


def test_every_greedy_choice_has_a_clear_margin(tmp_path):
    engine = engine_probe.make_engine(str(write_tiny_llama(tmp_path / "tiny")), "cpu", "float32", load_plugins())
    params = SamplingParams(temperature=0.0, max_tokens=engine_probe.MAX_TOKENS, ignore_eos=True, logprobs=2)
    for request_id, ids in {**engine_probe.FIRST_WAVE, **engine_probe.SECOND_WAVE}.items():
        engine.add_request(request_id, ids, params)
    margins = []
    while engine.has_unfinished_requests():
        for out in engine.step():
            for entry in out.outputs[0].logprobs if out.finished else []:
                best, second = sorted((value[0] for value in entry.values()), reverse=True)[:2]
                margins.append(best - second)
    assert len(margins) == 4 * engine_probe.MAX_TOKENS
    assert min(margins) >= MIN_MARGIN, f"a greedy choice is a near-tie ({min(margins):.4f}); pick another seed"
