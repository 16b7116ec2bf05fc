"""`tokenmill chat`: an interactive conversation that streams each reply as it is generated, with a
model loaded here or (--url) with a running server."""

from __future__ import annotations

import argparse
from dataclasses import asdict
import os
import sys
import uuid
from typing import Any

from tokenmill.cli.generate_cmd import add_sampling_args, require_chat_template, sampling_params_from
from tokenmill.cli.model_args import add_model_args
from tokenmill.cli.server_client import DEFAULT_URL, ServerClient, add_client_args, sampling_body
from tokenmill.config import EngineArgs

# None: the model's generation_config (temperature, top_p, top_k), then vLLM's defaults
CHAT_SAMPLING = {"max_tokens": 512, "temperature": None, "top_p": None, "top_k": None}
HISTORY_FILE = "chat_history"
GREETING = "tokenmill chat: type a message; /reset clears the conversation, /quit or Ctrl-D leaves, Ctrl-C stops a reply."


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("chat", help="chat interactively (default model: SmolLM2); /reset, /quit",
                                   description="Chat with a model through its chat template; replies stream as "
                                               "they are generated. Line editing and history come from readline.")
    add_model_args(parser)
    parser.add_argument("--url", default=None,
                        help="chat with a running server instead of loading a model here, e.g. "
                             f"{DEFAULT_URL} (as `vllm chat`); the engine flags are then unused")
    add_client_args(parser)
    parser.add_argument("--system", "--system-prompt", dest="system", default=None,
                        help="a system message to start the conversation with")
    parser.add_argument("--quick", default=None, metavar="MESSAGE",  # -q is --quantization here
                        help="send this one message, print the reply and exit")
    add_sampling_args(parser, CHAT_SAMPLING)
    EngineArgs.add_cli_args(parser)


def run(args: argparse.Namespace) -> int:
    if args.url:
        client = ServerClient(args.url, args.api_key, args.model_name)
        body = sampling_body(args)
        return _converse(args, lambda history: remote_reply(client, history, body, args.max_tokens))
    from tokenmill.llm import LLM

    llm = LLM(**asdict(EngineArgs.from_cli_args(args)))
    require_chat_template(llm)
    params = sampling_params_from(args, _model_defaults(llm))
    return _converse(args, lambda history: stream_reply(llm, history, params))


def _converse(args: argparse.Namespace, reply: Any) -> int:
    """The conversation loop (or one --quick exchange); `reply(history)` prints and returns the next answer."""
    history = _fresh(args.system)
    if args.quick is not None:
        reply([*history, {"role": "user", "content": args.quick}])
        return 0
    save_history = _enable_line_editing() if sys.stdin.isatty() else (lambda: None)
    print(GREETING)
    try:
        while True:
            line = _read_line()
            if line is None or line in ("/quit", "/exit"):
                return 0
            if line == "/reset":
                history = _fresh(args.system)
            elif line:
                history.append({"role": "user", "content": line})
                history.append({"role": "assistant", "content": reply(history)})
    finally:
        save_history()


def remote_reply(client: ServerClient, history: list[dict[str, str]], body: dict[str, Any],
                 max_tokens: int | None, out=None) -> str:
    """The next assistant message from the server, printed as it streams; Ctrl-C stops it early."""
    out = out or sys.stdout
    out.write("bot> ")
    text, finish = client.echo("/chat/completions", {"messages": history, **body}, out)
    out.write("\n" + _notice(finish, max_tokens))
    out.flush()
    return text


def _model_defaults(llm: Any) -> dict[str, Any]:
    from tokenmill.loaders.generation_defaults import generation_defaults

    return generation_defaults(llm.engine.bundle.source)


def stream_reply(llm: Any, history: list[dict[str, str]], params: Any, out=None) -> str:
    """Generate the next assistant message, printing text as it arrives; Ctrl-C stops it early."""
    out = out or sys.stdout
    engine = llm.engine
    request_id = f"chat-{uuid.uuid4().hex}"
    engine.add_request(request_id, engine.apply_chat_template(history), params)
    out.write("bot> ")
    text, finish = "", None
    try:
        while finish is None:
            for output in engine.step():
                if output.request_id == request_id:
                    completion = output.outputs[0]
                    out.write(completion.text[len(text):])
                    out.flush()
                    text, finish = completion.text, completion.finish_reason
    except KeyboardInterrupt:
        engine.abort_request(request_id)
        finish = "interrupted"
    out.write("\n" + _notice(finish, params.max_tokens))
    out.flush()
    return text


def _notice(finish: str | None, max_tokens: int | None) -> str:
    if finish == "length":
        return f"[reply cut at --max-tokens {max_tokens}; raise it to let replies run longer]\n"
    if finish == "interrupted":
        return "[reply stopped]\n"
    return ""


def _read_line() -> str | None:
    try:
        return input("you> ").strip()
    except EOFError:
        print()
        return None
    except KeyboardInterrupt:  # Ctrl-C at the prompt leaves, as in most REPLs
        print()
        return None


def _enable_line_editing():
    """Arrow-key editing and history through readline, kept between sessions; returns the save function."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input()
        return lambda: None
    path = os.path.join(os.environ.get("TOKENMILL_CACHE_DIR") or os.path.expanduser("~/.cache/tokenmill"),
                        HISTORY_FILE)
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)

    def save() -> None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            readline.write_history_file(path)
        except OSError:
            pass

    return save


def _fresh(system: str | None) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}] if system else []
