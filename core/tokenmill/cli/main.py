"""The `tokenmill` entry point: builds the subcommand parser and turns user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from types import ModuleType

import tokenmill
from tokenmill.cli.model_args import merge_model_args
from tokenmill.errors import TokenmillError

# Each name has a module tokenmill.cli.<name>_cmd with add_parser(subparsers) and run(args) -> int.
# A command whose module is not written yet is left out of the parser.
COMMANDS = ("plugins", "generate", "chat", "complete", "serve", "bench")
USER_ERROR_EXIT = 2


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a TokenmillError prints `error: <message>` and exits 2, no traceback."""
    try:
        parser = build_parser()
        args = parse_args(parser, argv)
        return args.run(args)
    except TokenmillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        return 130


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends each flag's line with its default, unless the default is None, False or a list."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unshown = default is None or default is False or default is argparse.SUPPRESS or isinstance(default, list) \
            or isinstance(action, argparse._StoreFalseAction)  # "--no-x (default: True)" reads backwards
        if unshown or "(default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`; an unknown flag is reported with the usage of the subcommand it was given to."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    merge_model_args(args)
    return args


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subcommand parser that `args` went through (`tokenmill bench serve`'s, say)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _chosen_parser(chosen, args)
    return parser


def _use_defaults_formatter(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = DefaultsHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _use_defaults_formatter(sub)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every present subcommand attached."""
    parser = argparse.ArgumentParser(
        prog="tokenmill", description="An LLM inference engine whose hardware support is a set of plugins."
    )
    parser.add_argument("--version", action="version", version=f"tokenmill {tokenmill.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = _command_module(name)
        if module is None:
            continue
        module.add_parser(subparsers)
        subparsers.choices[name].set_defaults(run=module.run)
    _use_defaults_formatter(parser)
    return parser


def _command_module(name: str) -> ModuleType | None:
    """The module of command `name`, or None when it does not exist yet.

    An existing module that fails to import is a bug to see, so its exception propagates.
    """
    module_name = f"{__package__}.{name}_cmd"
    if importlib.util.find_spec(module_name) is None:
        return None
    return importlib.import_module(module_name)


if __name__ == "__main__":
    sys.exit(main())
