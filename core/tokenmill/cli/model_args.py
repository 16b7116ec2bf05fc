"""The model flag every command shares: `--model`, and for serve also vLLM's positional MODEL."""

from __future__ import annotations

import argparse

from tokenmill.errors import TokenmillError

MODEL_HELP = ("HF model directory, .gguf file or Hugging Face Hub id (org/name, or org/name/file.gguf); "
              "default: the embedded SmolLM2-135M-Instruct")


def add_model_args(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """`--model`, plus an optional positional MODEL when `positional` (as `vllm serve MODEL`)."""
    if positional:
        parser.add_argument("model_positional", nargs="?", default=None, metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--model", default=None, help=MODEL_HELP)


def merge_model_args(args: argparse.Namespace) -> None:
    """Fold the positional MODEL into args.model; giving two different models is an error."""
    positional = getattr(args, "model_positional", None)
    if positional is None:
        return
    if args.model is not None and args.model != positional:
        raise TokenmillError(f"two models were given, {positional!r} and --model {args.model!r}; give one")
    args.model = positional
    del args.model_positional
