"""`tokenmill generate`: run prompts through the engine and print the completions."""

from __future__ import annotations

import argparse
from dataclasses import asdict
import sys

from tokenmill.config import EngineArgs

DEFAULT_PROMPT = "Write a haiku about a windmill that grinds words into meaning."


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="generate completions for prompts (default model: SmolLM2)")
    parser.add_argument("prompts", nargs="*", help="prompts; none reads one per line from stdin if piped, "
                        "else uses a built-in example")
    parser.add_argument("--model", default=None, help="HF directory or .gguf file (default: embedded SmolLM2)")
    add_sampling_args(parser)
    parser.add_argument("--no-chat-template", dest="chat", action="store_false",
                        help="send prompts as raw text instead of as user messages through the chat template")
    EngineArgs.add_cli_args(parser)


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    """Sampling flags shared by generate and chat."""
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--sampling-seed", type=int, default=None, help="per-request seed")


def sampling_params_from(args: argparse.Namespace):  # -> SamplingParams
    from tokenmill.sampling.params import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, seed=args.sampling_seed)


def run(args: argparse.Namespace) -> int:
    from tokenmill.llm import LLM

    prompts = args.prompts or _stdin_prompts() or [DEFAULT_PROMPT]
    engine_args = EngineArgs.from_cli_args(args)
    llm = LLM(**asdict(engine_args))
    params = sampling_params_from(args)
    if args.chat:
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
