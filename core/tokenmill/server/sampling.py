"""Turn an OpenAI request body into SamplingParams, refusing the options tokenmill cannot honour."""

from __future__ import annotations

from typing import Any

from tokenmill.errors import RequestError
from tokenmill.sampling.params import SamplingParams
from tokenmill.server.error_handlers import ApiError, request_error_param
from tokenmill.server.limits import ServerLimits
from tokenmill.server.protocol import ChatCompletionRequest, CompletionRequest, _SamplingFields
from tokenmill.structured.params import StructuredOutputsParams

MAX_LOGPROBS = 20  # OpenAI's chat limit; also applied to completions


def _refuse(message: str, param: str | None) -> ApiError:
    return ApiError(400, message, param=param)


def _check_limits(body: _SamplingFields, limits: ServerLimits) -> None:
    if body.n > limits.max_n:
        raise _refuse(f"n must be at most {limits.max_n} (this server's --max-n), got {body.n}", "n")
    stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
    if len(stops) > limits.max_stop_strings:
        raise _refuse(f"stop holds {len(stops)} strings; at most {limits.max_stop_strings} are allowed "
                      f"(--max-stop-strings)", "stop")
    longest = max((len(s) for s in stops), default=0)
    if longest > limits.max_stop_length:
        raise _refuse(f"a stop string is {longest} characters; at most {limits.max_stop_length} are allowed "
                      f"(--max-stop-length)", "stop")


def _params(fields: dict[str, Any]) -> SamplingParams:
    """SamplingParams(**fields), its refusals as 400s naming the field."""
    try:
        return SamplingParams(**fields)
    except RequestError as exc:
        raise _refuse(str(exc), request_error_param(str(exc))) from None


def _common(body: _SamplingFields, limits: ServerLimits) -> dict[str, Any]:
    _check_limits(body, limits)
    if body.stream_options is not None and not body.stream:
        raise _refuse("stream_options is only allowed with stream=true", "stream_options")
    return {
        "n": body.n,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "top_k": 0 if body.top_k is None else body.top_k,
        "min_p": 0.0 if body.min_p is None else body.min_p,
        "seed": body.seed,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "repetition_penalty": 1.0 if body.repetition_penalty is None else body.repetition_penalty,
        "stop": body.stop,
        "stop_token_ids": body.stop_token_ids,
        "ignore_eos": body.ignore_eos,
        "min_tokens": body.min_tokens,
        "skip_special_tokens": body.skip_special_tokens,
        "include_stop_str_in_output": body.include_stop_str_in_output,
        "logit_bias": _logit_bias(body.logit_bias),
        "bad_words": body.bad_words or None,
        "allowed_token_ids": body.allowed_token_ids,
    }


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    """OpenAI's {"token id as text": bias} as {token id: bias}."""
    if not bias:
        return None
    out = {}
    for key, value in bias.items():
        if not key.lstrip("-").isdigit():
            raise _refuse(f"logit_bias keys must be token ids, got {key!r}", "logit_bias")
        out[int(key)] = value
    return out


def _check_logprobs(value: int | None, param: str) -> None:
    if value is not None and not 0 <= value <= MAX_LOGPROBS:
        raise _refuse(f"{param} must be between 0 and {MAX_LOGPROBS}, got {value}", param)


def completion_params(body: CompletionRequest, limits: ServerLimits,
                      structured: StructuredOutputsParams | None = None) -> SamplingParams:
    """SamplingParams of /v1/completions; echo with logprobs also asks for the prompt's logprobs."""
    if body.suffix is not None:
        raise _refuse("suffix (fill-in-the-middle) is not supported by tokenmill; remove it", "suffix")
    if body.best_of is not None and body.best_of != body.n:
        raise _refuse(f"best_of ({body.best_of}) must equal n ({body.n}); tokenmill returns every sample", "best_of")
    _check_logprobs(body.logprobs, "logprobs")
    fields = _common(body, limits)
    fields.update(max_tokens=body.max_tokens, logprobs=body.logprobs, structured_outputs=structured,
                  prompt_logprobs=body.logprobs if body.echo and body.logprobs is not None else None)
    return _params(fields)


def chat_params(body: ChatCompletionRequest, limits: ServerLimits,
                structured: StructuredOutputsParams | None = None) -> SamplingParams:
    """SamplingParams of /v1/chat/completions; no max_tokens means up to the context limit.

    `structured` is the request's checked constraint (server/structured.py, or the tool plan's)."""
    if body.top_logprobs is not None and not body.logprobs:
        raise _refuse("top_logprobs needs logprobs=true", "top_logprobs")
    _check_logprobs(body.top_logprobs, "top_logprobs")
    fields = _common(body, limits)
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    fields.update(max_tokens=max_tokens, logprobs=logprobs, structured_outputs=structured)
    return _params(fields)
