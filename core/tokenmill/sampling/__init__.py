"""Sampling: per-request SamplingParams, the batched Sampler and logprobs."""

from tokenmill.sampling.logprobs import PositionLogprobs, position_logprobs
from tokenmill.sampling.noise import new_generator
from tokenmill.sampling.params import SamplingParams
from tokenmill.sampling.sampler import Sampler, SamplerOutput, SamplingRow

__all__ = [
    "PositionLogprobs",
    "Sampler",
    "SamplerOutput",
    "SamplingParams",
    "SamplingRow",
    "new_generator",
    "position_logprobs",
]
