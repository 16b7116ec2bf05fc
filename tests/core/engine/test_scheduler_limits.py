"""Unset --max-num-seqs / --max-num-batched-tokens take the platform's suggestion, else the core's."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tokenmill.config import EngineArgs
from tokenmill.engine.scheduler_limits import CORE_DEFAULTS, resolve_scheduler_limits
from tokenmill.errors import PluginError, TokenmillError


@dataclass
class _Suggesting:
    name: str = "big-card"
    scheduler_defaults: dict = field(default_factory=lambda: {"max_num_seqs": 512, "max_num_batched_tokens": 8192})


class _Silent:
    name = "plain"


def test_unset_limits_take_the_platform_suggestion():
    args = resolve_scheduler_limits(EngineArgs(), _Suggesting())
    assert (args.max_num_seqs, args.max_num_batched_tokens) == (512, 8192)


def test_a_platform_without_suggestions_gets_the_core_defaults():
    args = resolve_scheduler_limits(EngineArgs(), _Silent())
    assert {"max_num_seqs": args.max_num_seqs, "max_num_batched_tokens": args.max_num_batched_tokens} == CORE_DEFAULTS


def test_the_users_limits_win_over_the_platform():
    args = resolve_scheduler_limits(EngineArgs(max_num_seqs=3, max_num_batched_tokens=100), _Suggesting())
    assert (args.max_num_seqs, args.max_num_batched_tokens) == (3, 100)
    partial = resolve_scheduler_limits(EngineArgs(max_num_seqs=3), _Suggesting())
    assert (partial.max_num_seqs, partial.max_num_batched_tokens) == (3, 8192)


@pytest.mark.parametrize("bad", [{"max_num_seqs": 0}, {"max_num_seqs": "512"}, {"max_batch": 4}, {"max_num_seqs": True}])
def test_a_bad_suggestion_is_refused_naming_the_plugin(bad):
    with pytest.raises(PluginError, match="big-card.*fix the plugin"):
        resolve_scheduler_limits(EngineArgs(), _Suggesting(scheduler_defaults=bad))


def test_a_non_positive_user_limit_is_still_refused():
    with pytest.raises(TokenmillError, match="--max-num-seqs must be a positive integer"):
        EngineArgs(max_num_seqs=0)


def test_the_cpu_engine_runs_with_the_core_defaults(make_engine):
    engine = make_engine()  # the CPU plugin suggests nothing
    assert engine.scheduler.max_num_seqs == 256 and engine.scheduler.max_num_batched_tokens == 2048
    assert (engine.args.max_num_seqs, engine.args.max_num_batched_tokens) == (256, 2048)
