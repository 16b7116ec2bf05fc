"""A small streaming client of a running OpenAI-compatible server, for `tokenmill chat --url` and
`tokenmill complete` (httpx, already a dependency, rather than the openai package, which is not)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx

from tokenmill.errors import TokenmillError

DEFAULT_URL = "http://localhost:8000/v1"


def add_client_args(parser: Any) -> None:
    """--url, --model-name and --api-key, as `vllm chat` and `vllm complete` take them."""
    parser.add_argument("--model-name", default=None,
                        help="model to ask for with --url (default: the first one the server lists)")
    parser.add_argument("--api-key", default=None,
                        help="key for a server started with --api-key (default: $TOKENMILL_API_KEY or "
                             "$OPENAI_API_KEY)")


class ServerClient:
    """Talks to `url` (…/v1; the /v1 is added when missing) with an optional bearer key."""

    def __init__(self, url: str, api_key: str | None = None, model: str | None = None) -> None:
        url = url.rstrip("/")
        self.base = url if url.endswith("/v1") else url + "/v1"
        key = api_key or os.environ.get("TOKENMILL_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0), headers=self.headers)
        self.model = model or self._first_model()

    def _first_model(self) -> str:
        response = self._call(lambda: self.http.get(self.base + "/models"))
        models = response.json().get("data") or []
        if not models:
            raise TokenmillError(f"{self.base}/models lists no model; pass --model-name")
        return models[0]["id"]

    def _call(self, send: Any) -> httpx.Response:
        try:
            response = send()
        except httpx.HTTPError as exc:
            raise TokenmillError(f"cannot reach the server at {self.base} ({exc}); start one with `tokenmill "
                                 f"serve` or pass --url") from None
        if response.status_code != 200:
            raise TokenmillError(f"the server answered {response.status_code}: {_message(response)}")
        return response

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
        """(text delta, finish_reason) pairs of a streamed chat or text completion."""
        body = {"model": self.model, **body, "stream": True}
        try:
            with self.http.stream("POST", self.base + path, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise TokenmillError(f"the server answered {response.status_code}: {_message(response)}")
                for line in response.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        yield _delta(json.loads(line[6:]))
        except httpx.HTTPError as exc:
            raise TokenmillError(f"the connection to {self.base} failed ({exc})") from None

    def echo(self, path: str, body: dict[str, Any], out: Any) -> tuple[str, str | None]:
        """Stream a completion to `out` as it arrives: (the whole text, finish_reason). Ctrl-C closes the
        connection, which aborts the request on the server, and gives the finish reason "interrupted"."""
        text, finish = "", None
        stream = self.stream(path, body)
        try:
            for delta, finish in stream:
                out.write(delta)
                out.flush()
                text += delta
        except KeyboardInterrupt:
            stream.close()
            finish = "interrupted"
        return text, finish


def _delta(chunk: dict[str, Any]) -> tuple[str, str | None]:
    if "error" in chunk:
        raise TokenmillError(f"the server failed mid-reply: {chunk['error'].get('message')}")
    choices = chunk.get("choices") or [{}]
    choice = choices[0]
    text = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
    return text or "", choice.get("finish_reason")


def _message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:500]


def sampling_body(args: Any) -> dict[str, Any]:
    """The request's sampling fields from the CLI's flags; a flag left unset is left to the server."""
    fields = {"max_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p,
              "top_k": args.top_k, "seed": args.sampling_seed}
    return {k: v for k, v in fields.items() if v is not None}
