"""`tokenmill generate`: run prompts through the engine and print the completions."""

from __future__ import annotations

import argparse
from dataclasses import asdict
import sys
from typing import Any

from tokenmill.cli.model_args import add_model_args
from tokenmill.config import EngineArgs
from tokenmill.errors import TokenmillError

DEFAULT_PROMPT = "Write a haiku about a windmill that grinds words into meaning."
# generate's defaults: greedy, so that a run is reproducible
GENERATE_SAMPLING = {"max_tokens": 128, "temperature": 0.0, "top_p": 1.0, "top_k": 0}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="generate completions for prompts (default model: SmolLM2)",
                                   description="Generate a completion for each prompt with the offline engine.")
    parser.add_argument("prompts", nargs="*", help="prompts; none reads one per line from stdin if piped, "
                        "else uses a built-in example")
    add_model_args(parser)
    add_sampling_args(parser, GENERATE_SAMPLING)
    parser.add_argument("--no-chat-template", dest="chat", action="store_false",
                        help="send prompts as raw text instead of as user messages through the chat template")
    EngineArgs.add_cli_args(parser)


def add_sampling_args(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """Sampling flags shared by generate and chat; a None default means the model's generation_config."""
    model_default = "the model's generation_config"
    parser.add_argument("--max-tokens", type=int, default=defaults["max_tokens"], help="most tokens per reply")
    parser.add_argument("--temperature", type=float, default=defaults["temperature"],
                        help="sampling temperature, 0 = greedy" + ("" if defaults["temperature"] is not None
                                                                   else f" (default: {model_default})"))
    parser.add_argument("--top-p", type=float, default=defaults["top_p"], help="nucleus sampling, 1 = off"
                        + ("" if defaults["top_p"] is not None else f" (default: {model_default})"))
    parser.add_argument("--top-k", type=int, default=defaults["top_k"], help="top-k sampling, 0 = off"
                        + ("" if defaults["top_k"] is not None else f" (default: {model_default})"))
    parser.add_argument("--sampling-seed", type=int, default=None, help="per-request seed (default: none)")


def sampling_params_from(args: argparse.Namespace, model_defaults: dict[str, Any] | None = None):  # -> SamplingParams
    """The flags' values; a flag left at None takes the model's default, then SamplingParams'."""
    from tokenmill.sampling.params import SamplingParams

    given = {"max_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p,
             "top_k": args.top_k, "seed": args.sampling_seed}
    merged = {**(model_defaults or {}), **{k: v for k, v in given.items() if v is not None}}
    return SamplingParams(**merged)


def require_chat_template(llm: Any, alternative: str = "") -> None:
    """A CLI error naming the CLI flags when the model has no chat template."""
    if not getattr(llm.get_tokenizer(), "chat_template", None):
        raise TokenmillError("this model has no chat template; pass one with --chat-template FILE_OR_TEMPLATE"
                             + alternative)


def run(args: argparse.Namespace) -> int:
    from tokenmill.llm import LLM

    prompts = args.prompts or _stdin_prompts() or [DEFAULT_PROMPT]
    llm = LLM(**asdict(EngineArgs.from_cli_args(args)))
    params = sampling_params_from(args)
    if args.chat:
        require_chat_template(llm, ", or send the prompts as raw text with --no-chat-template")
        outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=len(prompts) > 1)
    else:
        outputs = llm.generate(prompts, params, use_tqdm=len(prompts) > 1)
    for prompt, output in zip(prompts, outputs):
        print(f">>> {prompt}\n{output.outputs[0].text}\n")
    return 0


def _stdin_prompts() -> list[str]:
    if sys.stdin is None or sys.stdin.isatty():
        return []
    return [line.strip() for line in sys.stdin if line.strip()]
