"""`tokenmill chat`: an interactive conversation with a model through its chat template."""

from __future__ import annotations

import argparse
from dataclasses import asdict
import sys

from tokenmill.cli.generate_cmd import add_sampling_args, sampling_params_from
from tokenmill.config import EngineArgs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("chat", help="chat interactively (default model: SmolLM2); /reset, /quit")
    parser.add_argument("--model", default=None, help="HF directory or .gguf file (default: embedded SmolLM2)")
    parser.add_argument("--system", default=None, help="a system message to start the conversation with")
    add_sampling_args(parser)
    EngineArgs.add_cli_args(parser)


def run(args: argparse.Namespace) -> int:
    from tokenmill.llm import LLM

    engine_args = EngineArgs.from_cli_args(args)
    llm = LLM(**asdict(engine_args))
    params = sampling_params_from(args)
    history = _fresh(args.system)
    print("tokenmill chat: type a message; /reset clears the conversation, /quit or Ctrl-D leaves.")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            history = _fresh(args.system)
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        reply = llm.chat(history, params, use_tqdm=False)[0].outputs[0].text
        history.append({"role": "assistant", "content": reply})
        print(f"bot> {reply}")
        sys.stdout.flush()


def _fresh(system: str | None) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}] if system else []
