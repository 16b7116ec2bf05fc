"""One streamed HTTP request of the serving benchmark, timed per token as the client sees it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from tokenmill.bench.serve_dataset import ServeRequest


@dataclass(slots=True)
class RequestResult:
    """What the client measured for one request; times in seconds."""

    success: bool = False
    error: str = ""
    prompt_len: int = 0
    output_len: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)  # gaps between successive content chunks
    sent_at: float = 0.0  # time.time() when the request was sent
    headers: float = 0.0  # from sending to the response's status line (the server admitted it)
    generated_text: str = ""


def build_payload(endpoint: str, model: str, request: ServeRequest, *, ignore_eos: bool,
                  temperature: float) -> dict[str, Any]:
    """The JSON body of a streamed completion (prompt as text or ids) or chat completion."""
    common = {"model": model, "stream": True, "stream_options": {"include_usage": True},
              "temperature": temperature, "ignore_eos": ignore_eos}
    if endpoint.endswith("/chat/completions"):
        return {**common, "messages": [{"role": "user", "content": request.prompt}],
                "max_completion_tokens": request.output_len}
    return {**common, "prompt": request.prompt, "max_tokens": request.output_len}


def _chunk_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    if "delta" in choice:
        return choice["delta"].get("content") or ""
    return choice.get("text") or ""


async def send_request(client: Any, url: str, payload: dict[str, Any], request: ServeRequest,
                       headers: dict[str, str]) -> RequestResult:
    """POST one streamed request with an httpx.AsyncClient; never raises, failures are recorded."""
    result = RequestResult(prompt_len=request.prompt_len)
    result.sent_at, start = time.time(), time.perf_counter()
    last = start
    try:
        async with client.stream("POST", url, json=payload, headers=headers) as response:
            result.headers = time.perf_counter() - start
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread()).decode()[:200]}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = str(chunk["error"].get("message", chunk["error"]))
                    return result
                now = time.perf_counter()
                text = _chunk_text(chunk)
                if text:
                    if not result.generated_text:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
                    result.generated_text += text
                if chunk.get("usage"):
                    result.output_len = chunk["usage"].get("completion_tokens", 0)
        result.latency = time.perf_counter() - start
        result.output_len = result.output_len or len(result.itl) + (1 if result.generated_text else 0)
        result.success = True
    except Exception as exc:  # connection refused, reset, timeout: count it as failed and go on
        result.error = f"{type(exc).__name__}: {exc}"
    return result
