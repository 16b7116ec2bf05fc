"""The engine-core process's messages (msgspec structs) and their MessagePack codecs.

msgspec rather than pickle or msgpack-python: its typed structs encode and decode several times
faster than either (no per-object dict round trip), the decoder checks every field's type, so a
garbled frame fails loudly instead of reaching the scheduler, and it handles the dataclasses the
engine already uses (SamplingParams, EngineStats) without hand-written converters. Frames are
array-like (field order, no names) to stay small: a decode step's output is mostly token ids.
"""

from __future__ import annotations

import msgspec

from tokenmill.engine.stats import EngineStats
from tokenmill.sampling.params import SamplingParams

# token id -> (logprob, rank): a position's top logprobs before the API process adds token texts
RawLogprobs = dict[int, tuple[float, int]]


# ---------------------------------------------------------------- API process -> engine process

class AddRequest(msgspec.Struct, tag="add", array_like=True, gc=False):
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int = 0


class AbortRequests(msgspec.Struct, tag="abort", array_like=True, gc=False):
    """Drop these user requests and free their blocks (a client left, or the server drains)."""

    request_ids: list[str]


class FinishSamples(msgspec.Struct, tag="finish", array_like=True, gc=False):
    """The API process matched a stop string: end these samples of a request as "stop"."""

    request_id: str
    indices: list[int]
    stop_reason: str | None = None


class Shutdown(msgspec.Struct, tag="shutdown", array_like=True, gc=False):
    """Fail what is still running and exit."""


Command = AddRequest | AbortRequests | FinishSamples | Shutdown


# ---------------------------------------------------------------- engine process -> API process

class SampleDelta(msgspec.Struct, array_like=True, gc=False):
    """What one sample of a user request gained in one step."""

    request_id: str  # the user request (the parent of its n samples)
    index: int
    new_token_ids: list[int]
    new_logprobs: list[RawLogprobs | None] | None  # one per new token when logprobs were asked for
    cumulative_logprob: float | None
    finish_reason: str | None
    stop_reason: int | str | None
    num_cached_tokens: int


class PromptLogprobsDelta(msgspec.Struct, array_like=True, gc=False):
    request_id: str
    entries: list[RawLogprobs | None]  # the next prompt positions' entries (position 0's is None)


class RequestFailed(msgspec.Struct, array_like=True, gc=False):
    """The engine refused (refused=True: an HTTP 400) or failed (an HTTP 500) this request."""

    request_id: str
    message: str
    refused: bool


class EngineOutputs(msgspec.Struct, tag="outputs", array_like=True, gc=False):
    """One message per engine loop turn: the step's deltas, failures and the newest stats."""

    samples: list[SampleDelta]
    prompt_logprobs: list[PromptLogprobsDelta]
    failed: list[RequestFailed]
    stats: EngineStats | None = None


class EngineDead(msgspec.Struct, tag="dead", array_like=True, gc=False):
    """The engine process's last word: why its loop stopped."""

    reason: str


Reply = EngineOutputs | EngineDead


def command_codec() -> tuple[msgspec.msgpack.Encoder, msgspec.msgpack.Decoder]:
    return msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Command)


def reply_codec() -> tuple[msgspec.msgpack.Encoder, msgspec.msgpack.Decoder]:
    return msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Reply)
