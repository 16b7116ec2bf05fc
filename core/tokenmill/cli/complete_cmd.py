"""`tokenmill complete`: text completions from a running server, streamed (as `vllm complete`)."""

from __future__ import annotations

import argparse
import sys

from tokenmill.cli.generate_cmd import add_sampling_args
from tokenmill.cli.server_client import DEFAULT_URL, ServerClient, add_client_args, sampling_body

# None: the server's defaults
COMPLETE_SAMPLING = {"max_tokens": 128, "temperature": None, "top_p": None, "top_k": None}
GREETING = "tokenmill complete: type a prompt; the server continues it. /quit or Ctrl-D leaves, Ctrl-C stops one."


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("complete", help="complete prompts with a running server (/v1/completions)",
                                   description="Send prompts to a running server's /v1/completions and stream "
                                               "the continuations; one prompt per line, or one with --quick.")
    parser.add_argument("--url", default=DEFAULT_URL, help="the server's OpenAI API base URL")
    add_client_args(parser)
    parser.add_argument("-q", "--quick", default=None, metavar="PROMPT", help="complete this one prompt and exit")
    add_sampling_args(parser, COMPLETE_SAMPLING)


def run(args: argparse.Namespace) -> int:
    client = ServerClient(args.url, args.api_key, args.model_name)
    body = sampling_body(args)
    if args.quick is not None:
        complete(client, args.quick, body, args.max_tokens)
        return 0
    print(GREETING)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line.strip() in ("/quit", "/exit"):
            return 0
        if line:
            complete(client, line, body, args.max_tokens)


def complete(client: ServerClient, prompt: str, body: dict, max_tokens: int | None, out=None) -> str:
    """Stream the continuation of `prompt` to `out`; Ctrl-C stops it early."""
    out = out or sys.stdout
    text, finish = client.echo("/completions", {"prompt": prompt, **body}, out)
    out.write("\n")
    if finish == "length":
        out.write(f"[cut at --max-tokens {max_tokens}; raise it for longer completions]\n")
    out.flush()
    return text
