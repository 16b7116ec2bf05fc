"""Reasoning output: the --reasoning-parser names, which split a model's <think> block into reasoning_content."""

from tokenmill.server.reasoning.think import REASONING_PARSERS, ThinkSplitter, reasoning_splitter

__all__ = ["REASONING_PARSERS", "ThinkSplitter", "reasoning_splitter"]
