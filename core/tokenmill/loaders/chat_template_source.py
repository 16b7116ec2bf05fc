"""Reads a --chat-template value: a path to a Jinja file, or the template itself given inline."""

from __future__ import annotations

from pathlib import Path

from tokenmill.errors import ModelLoadError

_TEMPLATE_MARKS = ("{{", "{%")


def read_chat_template(value: str) -> str:
    """The template text: the file's contents when `value` names a file, else `value` if it is Jinja."""
    path = Path(value).expanduser()
    if len(value) < 4096 and "\n" not in value and path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"--chat-template {value}: cannot read the file ({exc})") from None
    if any(mark in value for mark in _TEMPLATE_MARKS):
        return value
    raise ModelLoadError(f"--chat-template {value!r} is neither a file nor a Jinja template; give the path of a "
                         "template file or the template inline, e.g. \"{% for m in messages %}...{% endfor %}\"")
