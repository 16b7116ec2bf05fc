"""`tokenmill serve` flags of the OpenAI API's agent features: the tool-call and reasoning parsers."""

from __future__ import annotations

import argparse
from typing import Any


def add_api_feature_args(parser: argparse.ArgumentParser) -> None:
    from tokenmill.server.reasoning import REASONING_PARSERS
    from tokenmill.server.tools import TOOL_CALL_PARSERS

    parser.add_argument("--tool-call-parser", choices=sorted(TOOL_CALL_PARSERS), default=None,
                        help="how to read tool calls from the model's text for tool_choice \"auto\": hermes or qwen "
                             "(<tool_call> blocks), llama3_json (Llama 3.x JSON), mistral ([TOOL_CALLS]); "
                             "default: none, and \"auto\" is refused")
    parser.add_argument("--enable-auto-tool-choice", action="store_true",
                        help="vLLM's switch for tool_choice \"auto\"; accepted, and it needs --tool-call-parser "
                             "(which alone already enables \"auto\")")
    parser.add_argument("--reasoning-parser", choices=sorted(REASONING_PARSERS), default=None,
                        help="split the model's <think> block into reasoning_content: qwen3 or deepseek_r1 "
                             "(default: none, the thinking stays in content)")


def check_api_feature_args(args: argparse.Namespace) -> None:
    """--enable-auto-tool-choice without a parser is a ValueError naming the fix."""
    if getattr(args, "enable_auto_tool_choice", False) and getattr(args, "tool_call_parser", None) is None:
        raise ValueError("--enable-auto-tool-choice needs --tool-call-parser (hermes, qwen, llama3_json or mistral)")


def apply_api_feature_args(args: argparse.Namespace, state: Any) -> None:
    state.tool_call_parser = args.tool_call_parser
    state.reasoning_parser = args.reasoning_parser
