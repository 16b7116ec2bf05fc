"""`tokenmill serve [MODEL]`: load a model and serve the OpenAI-compatible API over HTTP."""

from __future__ import annotations

import argparse
import logging
import os

from tokenmill.cli.model_args import add_model_args
from tokenmill.cli.operator_args import add_operator_args, apply_operator_args
from tokenmill.config import EngineArgs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the OpenAI-compatible HTTP API",
        description="Serve /v1/completions, /v1/chat/completions, /v1/models, /tokenize, /detokenize, "
                    "/health, /version and /metrics for one model.")
    add_serve_args(parser)


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """The server's flags plus every engine flag (EngineArgs.add_cli_args)."""
    add_model_args(parser, positional=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--api-key", default=os.environ.get("TOKENMILL_API_KEY"),
                        help="require `Authorization: Bearer KEY` (default: $TOKENMILL_API_KEY; unset: no key)")
    parser.add_argument("--served-model-name", action="append", default=None,
                        help="a name clients use in `model`; repeat for aliases, the first is the one responses "
                             "carry (default: the model path, or the default model's name)")
    parser.add_argument("--shutdown-grace-period", type=float, default=10.0,
                        help="seconds in-flight requests get to finish on SIGTERM before they are aborted")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                        help="server log level")
    add_operator_args(parser)
    EngineArgs.add_cli_args(parser)


def run(args: argparse.Namespace) -> int:
    from tokenmill.llm import build_engine
    from tokenmill.server.app import build_state, create_app
    from tokenmill.server.launch import make_server

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    core = build_engine(EngineArgs.from_cli_args(args))
    state = build_state(core, served_model_name=args.served_model_name, api_key=args.api_key,
                        shutdown_grace_s=args.shutdown_grace_period)
    server = make_server(create_app(state), host=args.host, port=args.port, log_level=args.log_level)
    apply_operator_args(args, state, server)
    logging.getLogger(__name__).info("serving %s on http://%s:%d", state.model_name, args.host, args.port)
    server.run()
    return 0
