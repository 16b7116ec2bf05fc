"""`tokenmill serve` flags for the operator: access log, periodic stats logging, the chat page, CORS."""

from __future__ import annotations

import argparse
import json
from typing import Any

DEFAULT_STATS_INTERVAL_S = 10.0


def add_operator_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                        help="log one line per HTTP request (method, path, status)")
    parser.add_argument("--disable-uvicorn-access-log", dest="access_log", action="store_false",
                        help=argparse.SUPPRESS)  # vLLM's spelling
    parser.add_argument("--stats-interval", type=float, default=DEFAULT_STATS_INTERVAL_S,
                        help="seconds between logged throughput and queue stats while requests run; 0: never")
    parser.add_argument("--disable-log-stats", dest="stats_interval", action="store_const", const=0.0,
                        help=argparse.SUPPRESS)  # vLLM's spelling
    parser.add_argument("--chat-page", action=argparse.BooleanOptionalAction, default=True,
                        help="serve the built-in chat page at / (--no-chat-page: / answers 404)")
    parser.add_argument("--allowed-origins", type=_origins, default=[],
                        help="browser origins allowed to call the API from other sites (CORS), comma-separated "
                             "or a JSON list, e.g. http://localhost:3000 or '*' (default: none, same origin only)")
    parser.add_argument("--allowed-methods", type=_origins, default=["*"],
                        help="HTTP methods allowed from those origins, comma-separated or a JSON list")
    parser.add_argument("--allowed-headers", type=_origins, default=["*"],
                        help="request headers allowed from those origins, comma-separated or a JSON list")
    parser.add_argument("--allow-credentials", action="store_true",
                        help="let those origins send cookies and HTTP authentication (CORS credentials)")


def apply_operator_args(args: argparse.Namespace, state: Any, server: Any) -> None:
    """Switch the access log and the chat page, and start the stats logger, on a built server."""
    from tokenmill.server.routes.chat_page import CHAT_PAGE_SWITCH
    from tokenmill.server.stats_logger import start_stats_logger

    if args.access_log != server.config.access_log:
        server.config.access_log = args.access_log
        server.config.configure_logging()  # uvicorn wires its access logger up (or not) from this flag
    setattr(server.config.app.state, CHAT_PAGE_SWITCH, args.chat_page)
    from tokenmill.server.cors import allow_origins

    allow_origins(server.config.app, args.allowed_origins, methods=args.allowed_methods, headers=args.allowed_headers,
                  credentials=args.allow_credentials)
    if args.stats_interval > 0:
        start_stats_logger(lambda: state.engine.latest_stats, args.stats_interval)


def _origins(text: str) -> list[str]:
    """`a,b` or `["a", "b"]` (vLLM's JSON form) -> a list (of origins, methods or headers)."""
    text = text.strip()
    if text.startswith("["):
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a JSON list of origins ({exc})") from None
        return [str(v) for v in values]
    return [part.strip() for part in text.split(",") if part.strip()]
