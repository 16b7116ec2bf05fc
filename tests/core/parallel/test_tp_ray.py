"""The Ray executor: rank 1 as a Ray actor in a placement group on a local cluster this test starts.

The same model and checks as the mp executor (logits and greedy tokens equal to one rank's), and
a killed actor ends the engine naming rank 1. The cluster is started with 2 CPUs on 127.0.0.1
and shut down at the end.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from test_tp_mp import PROMPTS, greedy, prefill_logits
from test_tp_faults import _run_until_error, _signal_soon
from tokenmill.errors import EngineDeadError

ray = pytest.importorskip("ray", reason="CI installs tokenmill[ray]; pip install 'tokenmill[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def test_ray_ranks_match_one_rank_and_fail_cleanly(local_ray, tp_model_dirs, make_tp_engine):
    model = tp_model_dirs["kv1"]
    prompt = list(range(3, 40))
    one = make_tp_engine(model)
    want_logits, want_tokens = prefill_logits(one, prompt), greedy(one, PROMPTS)
    one.shutdown()
    two = make_tp_engine(model, tensor_parallel_size=2, distributed_executor_backend="ray", max_model_len=256)
    assert two.executor.launcher.name == "ray"
    torch.testing.assert_close(prefill_logits(two, prompt), want_logits, atol=2e-4, rtol=1e-4)
    assert greedy(two, PROMPTS) == want_tokens
    pid = two.executor.worker_pids()[1]
    assert pid != os.getpid()
    sent = _signal_soon(pid, signal.SIGKILL, 0.3)
    error, at = _run_until_error(two)
    assert at - sent["at"] < 15.0
    assert "rank 1" in str(error) or "rank(s) 1" in str(error)
    with pytest.raises(EngineDeadError):
        two.step()
    two.shutdown()
    assert not ray.util.placement_group_table()  or all(
        g["state"] == "REMOVED" for g in ray.util.placement_group_table().values())
    started = time.monotonic()  # the cluster takes a new engine after the failure
    again = make_tp_engine(model, tensor_parallel_size=2, distributed_executor_backend="ray")
    assert greedy(again, PROMPTS[:2], max_tokens=4) == [t[:4] for t in want_tokens[:2]]
    assert time.monotonic() - started < 120
