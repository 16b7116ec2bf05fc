"""Structured outputs: grammar specs, their cached compilation (xgrammar), per-sequence matchers and the batch token mask."""

from tokenmill.structured.params import StructuredOutputsParams

__all__ = ["StructuredOutputsParams"]
