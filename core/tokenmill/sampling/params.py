"""SamplingParams: one request's sampling options, with vLLM's names and defaults, self-validating."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from tokenmill.errors import RequestError
from tokenmill.structured.params import StructuredOutputsParams

# Below this temperature a request is greedy (vLLM's _SAMPLING_EPS): dividing by it would overflow.
GREEDY_EPS = 1e-5

_INT_FIELDS = ("n", "top_k", "seed", "max_tokens", "min_tokens", "logprobs", "prompt_logprobs")
_BOOL_FIELDS = ("ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output")
_FLOAT_FIELDS = ("presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "min_p")
_NULLABLE = ("seed", "max_tokens", "logprobs", "prompt_logprobs")
# The allowed values of each checked field, as error messages state them.
_ALLOWED = {
    "n": "an integer >= 1",
    "presence_penalty": "in [-2, 2] (0 = off)",
    "frequency_penalty": "in [-2, 2] (0 = off)",
    "repetition_penalty": "> 0 (1 = off)",
    "temperature": ">= 0 (0 = greedy)",
    "top_p": "in (0, 1] (1 = off)",
    "top_k": "-1 or 0 (off) or a positive integer",
    "min_p": "in [0, 1] (0 = off)",
    "max_tokens": ">= 1, or null for up to the context limit",
    "min_tokens": ">= 0",
    "logprobs": ">= 0, or null for none",
    "prompt_logprobs": ">= 0, or null for none",
}


@dataclass(slots=True)
class SamplingParams:
    """How to sample one request's completions. Field names and defaults follow vLLM.

    Differences from vLLM: top_k accepts both 0 and -1 for "off" (vLLM's old and new defaults);
    `stop` is always a list and `stop_token_ids` always a list after construction.
    """

    n: int = 1  # completions per prompt
    presence_penalty: float = 0.0  # [-2, 2], subtracted once from every token already generated
    frequency_penalty: float = 0.0  # [-2, 2], subtracted per occurrence in the generated tokens
    repetition_penalty: float = 1.0  # > 0; HF/CTRL: divides positive, multiplies negative logits
    temperature: float = 1.0  # >= 0; below GREEDY_EPS means greedy
    top_p: float = 1.0  # (0, 1]; 1 = off
    top_k: int = 0  # 0 or -1 = off
    min_p: float = 0.0  # [0, 1]; drop tokens with prob < min_p * max prob
    seed: int | None = None  # per-request seed: same seed, same output whatever else is batched
    stop: str | list[str] | None = None  # stop strings, matched on detokenized text
    stop_token_ids: list[int] | None = None  # extra token ids that finish the request
    ignore_eos: bool = False  # keep generating after EOS (the EOS token is still sampled normally)
    max_tokens: int | None = 16  # None = up to the context limit
    min_tokens: int = 0  # EOS and stop_token_ids are masked until this many tokens exist
    logprobs: int | None = None  # top-N logprobs per generated token (0 = only the sampled token)
    prompt_logprobs: int | None = None  # top-N logprobs per prompt token
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True  # kept for vLLM compatibility; fast tokenizers ignore it
    include_stop_str_in_output: bool = False
    structured_outputs: StructuredOutputsParams | None = None  # the grammar the output must match
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit, in [-100, 100]
    bad_words: list[str] | None = None  # words never generated (vLLM): each spelling's last token is banned
    allowed_token_ids: list[int] | None = None  # only these tokens may be sampled (vLLM)

    def __post_init__(self) -> None:
        self._check_types()
        self._normalise_stops()
        self._check_ranges()
        self._check_token_fields()
        if self.is_greedy:
            # As in vLLM: truncation knobs are meaningless for argmax, so turn them off.
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0

    @property
    def is_greedy(self) -> bool:
        """True when the request takes the argmax (temperature below GREEDY_EPS)."""
        return self.temperature < GREEDY_EPS

    @property
    def has_penalties(self) -> bool:
        """True when any of the three penalties differs from its no-op value."""
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingParams:
        """Build from a plain dict (a JSON body); an unknown key is refused by name."""
        valid = [f.name for f in fields(cls)]
        unknown = [key for key in d if key not in valid]
        if unknown:
            raise RequestError(
                f"unknown sampling field {unknown[0]!r}; valid fields are: {', '.join(valid)}"
            )
        return cls(**d)

    def _check_types(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            nullable = name in _NULLABLE
            if not (_is_int(value) or (nullable and value is None)):
                raise RequestError(f"{name} must be an integer{' or null' if nullable else ''}, got {value!r}")
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise RequestError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RequestError(f"{name} must be a finite number {_ALLOWED[name]}, got {value!r}")
            setattr(self, name, float(value))

    def _normalise_stops(self) -> None:
        stop = self.stop
        if stop is None:
            stop = []
        elif isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
            raise RequestError(f"stop must be a string or a list of strings, got {self.stop!r}")
        if any(s == "" for s in stop):
            raise RequestError("stop must not contain an empty string; remove it or use a non-empty stop")
        self.stop = list(stop)
        ids = [] if self.stop_token_ids is None else self.stop_token_ids
        if not isinstance(ids, (list, tuple)) or not all(_is_int(i) and i >= 0 for i in ids):
            raise RequestError(f"stop_token_ids must be a list of non-negative token ids, got {self.stop_token_ids!r}")
        self.stop_token_ids = list(ids)

    def _check_token_fields(self) -> None:
        if isinstance(self.structured_outputs, dict):
            try:
                self.structured_outputs = StructuredOutputsParams(**self.structured_outputs)
            except TypeError as exc:
                raise RequestError(f"structured_outputs: {exc}") from None
        if self.structured_outputs is not None and not isinstance(self.structured_outputs, StructuredOutputsParams):
            raise RequestError(f"structured_outputs must be StructuredOutputsParams, got {self.structured_outputs!r}")
        if self.logit_bias is not None:
            bias = self.logit_bias
            if not isinstance(bias, dict) or not all(_is_int(k) and _is_number(v) and -100 <= v <= 100
                                                     for k, v in bias.items()):
                raise RequestError(f"logit_bias must map token ids to numbers in [-100, 100], got {bias!r}")
            self.logit_bias = {k: float(v) for k, v in bias.items()}
        words = self.bad_words
        if words is not None and (not isinstance(words, (list, tuple)) or not all(isinstance(w, str) and w.strip()
                                                                                 for w in words)):
            raise RequestError(f"bad_words must be a list of non-empty strings, got {words!r}")
        ids = self.allowed_token_ids
        if ids is not None and (not isinstance(ids, (list, tuple)) or not ids or not all(_is_int(i) for i in ids)):
            raise RequestError(f"allowed_token_ids must be a non-empty list of token ids, got {ids!r}")

    def _check_ranges(self) -> None:
        checks = {
            "n": self.n >= 1,
            "presence_penalty": -2.0 <= self.presence_penalty <= 2.0,
            "frequency_penalty": -2.0 <= self.frequency_penalty <= 2.0,
            "repetition_penalty": self.repetition_penalty > 0.0,
            "temperature": self.temperature >= 0.0,
            "top_p": 0.0 < self.top_p <= 1.0,
            "top_k": self.top_k >= -1,
            "min_p": 0.0 <= self.min_p <= 1.0,
            "max_tokens": self.max_tokens is None or self.max_tokens >= 1,
            "min_tokens": self.min_tokens >= 0,
            "logprobs": self.logprobs is None or self.logprobs >= 0,
            "prompt_logprobs": self.prompt_logprobs is None or self.prompt_logprobs >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise RequestError(f"{name} must be {_ALLOWED[name]}, got {getattr(self, name)!r}")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise RequestError(
                f"min_tokens ({self.min_tokens}) must be <= max_tokens ({self.max_tokens}); "
                "lower min_tokens or raise max_tokens"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
