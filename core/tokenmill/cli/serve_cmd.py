"""`tokenmill serve [MODEL]`: load a model and serve the OpenAI-compatible API over HTTP."""

from __future__ import annotations

import argparse
import logging
import os

from tokenmill.cli.api_feature_args import add_api_feature_args, apply_api_feature_args, check_api_feature_args
from tokenmill.cli.model_args import add_model_args
from tokenmill.cli.operator_args import add_operator_args, apply_operator_args
from tokenmill.config import EngineArgs
from tokenmill.server.metrics import METRIC_NAMINGS
from tokenmill.startup_heap import freeze_startup_heap


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the OpenAI-compatible HTTP API",
        description="Serve /v1/completions, /v1/chat/completions, /v1/responses, /v1/models, /tokenize, "
                    "/detokenize, /health, /version and /metrics for one model.")
    add_serve_args(parser)


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """The server's flags plus every engine flag (EngineArgs.add_cli_args)."""
    add_model_args(parser, positional=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--api-key", default=os.environ.get("TOKENMILL_API_KEY"),
                        help="require `Authorization: Bearer KEY` on /v1/*, /tokenize and /detokenize (default: "
                             "$TOKENMILL_API_KEY; unset: no key; empty: refused). /health, /version, /docs and "
                             "/openapi.json stay open; /metrics follows --metrics-api-key")
    parser.add_argument("--metrics-api-key", default=os.environ.get("TOKENMILL_METRICS_API_KEY"),
                        help="require this key on /metrics (default: $TOKENMILL_METRICS_API_KEY; unset: /metrics is "
                             "open, as Prometheus scrapers usually send no key)")
    _add_limit_args(parser)
    parser.add_argument("--served-model-name", action="extend", nargs="+", default=None, metavar="NAME",
                        help="names clients use in `model`, several after one flag (as vLLM) or the flag repeated; "
                             "the first is the one responses and the metrics' model_name label carry (default: the "
                             "model path, or the default model's name)")
    parser.add_argument("--metric-names", choices=METRIC_NAMINGS, default="tokenmill",
                        help="vllm: export the metrics vLLM also has under vLLM's `vllm:` names, so dashboards and "
                             "routers built for vLLM read them unchanged (the others keep `tokenmill:`)")
    parser.add_argument("--shutdown-grace-period", type=float, default=10.0,
                        help="seconds in-flight requests get to finish on SIGTERM before they are aborted")
    parser.add_argument("--engine-core-process", action=argparse.BooleanOptionalAction, default=True,
                        help="run the engine core (scheduler, model, sampling) in its own process, as vLLM v1 does, "
                             "so HTTP, tokenizing and detokenizing never hold up a step; --no-engine-core-process "
                             "keeps it in a thread of the server process")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                        help="server log level")
    add_operator_args(parser)
    add_api_feature_args(parser)
    EngineArgs.add_cli_args(parser)


def _add_limit_args(parser: argparse.ArgumentParser) -> None:
    """Bounds on what one request may ask for (see tokenmill.server.limits.ServerLimits)."""
    from tokenmill.server.limits import ServerLimits

    d = ServerLimits()
    group = parser.add_argument_group("request limits")
    group.add_argument("--max-n", type=int, default=d.max_n, help="most completions per prompt (n)")
    group.add_argument("--max-stop-strings", type=int, default=d.max_stop_strings, help="most stop strings")
    group.add_argument("--max-stop-length", type=int, default=d.max_stop_length,
                       help="longest stop string, in characters")
    group.add_argument("--max-request-body-bytes", type=int, default=d.max_body_bytes,
                       help="larger request bodies get 413")
    group.add_argument("--max-queued-seqs", type=int, default=d.max_queued_seqs,
                       help="sequences (prompts x n) admitted but not started; past it requests get 503")
    group.add_argument("--max-pending-prompt-tokens", type=int, default=d.max_pending_prompt_tokens,
                       help="prompt tokens of those sequences; past it requests get 503")
    group.add_argument("--max-queue-wait", type=float, default=d.max_queue_wait_s,
                       help="seconds a request may wait to start before it gets 503")
    group.add_argument("--rate-limit", type=float, default=None, metavar="REQ_PER_S",
                       help="requests per second each API key (each address, without a key) may send on average; "
                            "past it requests get 429 (default: no limit)")
    group.add_argument("--rate-limit-burst", type=int, default=None,
                       help="requests a client may send at once under --rate-limit (default: 2 s worth, at least 1)")
    group.add_argument("--trust-request-chat-template", action="store_true",
                       help="render chat templates sent in requests (chat_template_kwargs.chat_template); they are "
                            "code, so they are refused by default, and even trusted they run in a sandbox process")
    group.add_argument("--chat-template-timeout", type=float, default=d.chat_template_timeout_s,
                       help="seconds a request's own chat template may take to render")


def _limits(args: argparse.Namespace):
    from tokenmill.server.limits import ServerLimits

    return ServerLimits(max_n=args.max_n, max_stop_strings=args.max_stop_strings,
                        max_stop_length=args.max_stop_length, max_body_bytes=args.max_request_body_bytes,
                        max_queued_seqs=args.max_queued_seqs, max_pending_prompt_tokens=args.max_pending_prompt_tokens,
                        max_queue_wait_s=args.max_queue_wait, chat_template_timeout_s=args.chat_template_timeout)


def _rate_limit(args: argparse.Namespace) -> tuple[float, int] | None:
    if args.rate_limit is None:
        return None
    from tokenmill.server.rate_limit import RateLimiter

    burst = args.rate_limit_burst if args.rate_limit_burst is not None else max(1, int(2 * args.rate_limit))
    RateLimiter(args.rate_limit, burst)  # refuses a rate <= 0 or a burst < 1
    return args.rate_limit, burst


def _check_args(args: argparse.Namespace) -> None:
    """Refuse bad server flags before the model loads (an empty key, a limit below 1)."""
    from tokenmill.errors import TokenmillError
    from tokenmill.server.auth import validate_key

    try:
        validate_key(args.api_key, "--api-key (or TOKENMILL_API_KEY)")
        validate_key(args.metrics_api_key, "--metrics-api-key (or TOKENMILL_METRICS_API_KEY)")
        _limits(args)
        _rate_limit(args)
        check_api_feature_args(args)
    except ValueError as exc:
        raise TokenmillError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from tokenmill.llm import build_engine
    from tokenmill.server.app import build_process_state, build_state, create_app
    from tokenmill.server.launch import make_server

    _check_args(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine_args = EngineArgs.from_cli_args(args)
    settings = dict(served_model_name=args.served_model_name, api_key=args.api_key,
                    shutdown_grace_s=args.shutdown_grace_period, metrics_api_key=args.metrics_api_key,
                    limits=_limits(args), trust_request_chat_template=args.trust_request_chat_template,
                    rate_limit=_rate_limit(args), metric_names=args.metric_names)
    if args.engine_core_process:
        state = build_process_state(engine_args, log_level=args.log_level, **settings)
    else:
        state = build_state(build_engine(engine_args), **settings)
    server = make_server(create_app(state), host=args.host, port=args.port, log_level=args.log_level)
    apply_operator_args(args, state, server)
    apply_api_feature_args(args, state)
    logging.getLogger(__name__).info("serving %s on http://%s:%d", state.model_name, args.host, args.port)
    freeze_startup_heap()
    server.run()
    if state.engine.dead_reason is not None:
        logging.getLogger(__name__).error("exiting: %s", state.engine.dead_reason)
        return 1
    return 0
