"""StructuredOutputsParams: what a request's output must match (a JSON schema, regex, choice or EBNF grammar)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenmill.errors import RequestError

_KINDS = ("json", "regex", "choice", "grammar", "json_object")


@dataclass(frozen=True, slots=True)
class StructuredOutputsParams:
    """One constraint on a request's output, with vLLM's field names; exactly one must be set.

    json: a JSON schema (a dict or its JSON text); json_object: any JSON object; regex: a regular
    expression the whole output matches; choice: the output is exactly one of these strings;
    grammar: an EBNF (GBNF) grammar whose rule `root` the output matches. disable_any_whitespace
    keeps JSON compact (no free whitespace between tokens), which small models need less often.
    """

    json: str | dict[str, Any] | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False

    def __post_init__(self) -> None:
        given = [k for k in _KINDS if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            what = "none" if not given else ", ".join(given)
            raise RequestError(f"structured_outputs must set exactly one of {', '.join(_KINDS)}; got {what}")
        if self.choice is not None and (not isinstance(self.choice, (list, tuple)) or not self.choice
                                        or not all(isinstance(c, str) and c for c in self.choice)):
            raise RequestError("structured_outputs.choice must be a non-empty list of non-empty strings")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise RequestError(f"structured_outputs.{name} must be a non-empty string")
        if self.json is not None and not isinstance(self.json, (str, dict)):
            raise RequestError("structured_outputs.json must be a JSON schema (an object or its JSON text)")

    @property
    def kind(self) -> str:
        """Which constraint this is: json, regex, choice, grammar or json_object."""
        return next(k for k in _KINDS if getattr(self, k) not in (None, False))

    def key(self) -> tuple[str, str, bool]:
        """A hashable identity for the compile cache: (kind, canonical text, compact)."""
        kind = self.kind
        if kind == "json":
            text = self.json if isinstance(self.json, str) else json.dumps(self.json, sort_keys=True)
        elif kind == "choice":
            text = json.dumps(list(self.choice))
        elif kind == "json_object":
            text = ""
        else:
            text = getattr(self, kind)
        return kind, text, self.disable_any_whitespace
