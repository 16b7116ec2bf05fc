"""`tokenmill serve` flags for the operator: the access log, periodic stats logging, the chat page."""

from __future__ import annotations

import argparse
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


def apply_operator_args(args: argparse.Namespace, state: Any, server: Any) -> None:
    """Switch the access log and the chat page, and start the stats logger, on a built server."""
    from tokenmill.server.routes.chat_page import CHAT_PAGE_SWITCH
    from tokenmill.server.stats_logger import start_stats_logger

    if args.access_log != server.config.access_log:
        server.config.access_log = args.access_log
        server.config.configure_logging()  # uvicorn wires its access logger up (or not) from this flag
    setattr(server.config.app.state, CHAT_PAGE_SWITCH, args.chat_page)
    if args.stats_interval > 0:
        start_stats_logger(lambda: state.engine.latest_stats, args.stats_interval)
