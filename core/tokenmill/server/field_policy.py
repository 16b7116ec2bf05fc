"""The compatibility policy for request fields: which known OpenAI fields are accepted and ignored.

OpenAI's SDKs and the agents built on them send fields that concern the provider's own
bookkeeping (who the end user is, how long to cache a prompt, which pricing tier to use) and
change nothing in the generated text. Those are accepted and ignored, with a debug log, so a
client written for OpenAI works unchanged. A field is ignored only at a value that leaves the
output as it is (`store: false`, `background: false`, `text.verbosity: "medium"`); any other
value is refused with a 400 that names the field and says why. Fields outside this table are
either declared by the request model (and honoured) or unknown, and unknown fields are refused
by the model (`extra="forbid"`), so a typo never passes silently.

A field a request model declares always wins over this table: once a route honours, say,
`reasoning_effort`, declaring it in the model is all it takes. The ignored fields are kept on
the parsed body (`ignored_fields(body)`) for a route that wants to look at them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IgnoredField:
    """A known field accepted and dropped when `accepts(value)`; otherwise a 400 with `refusal`."""

    name: str
    why: str  # why ignoring it leaves the output unchanged (for the docs table and the debug log)
    accepts: Callable[[Any], bool] = lambda value: True
    refusal: str = ""


def _falsy(value: Any) -> bool:
    return value is None or value is False


IGNORED_FIELDS: dict[str, IgnoredField] = {f.name: f for f in (
    IgnoredField("user", "an end-user id for the provider's abuse monitoring"),
    IgnoredField("safety_identifier", "an end-user id for the provider's abuse monitoring"),
    IgnoredField("metadata", "tags for objects the provider stores; tokenmill stores none"),
    IgnoredField("service_tier", "the provider's pricing and latency tier"),
    IgnoredField("prompt_cache_key", "a hint for the provider's prompt-cache routing (tokenmill's prefix "
                                     "cache needs none)"),
    IgnoredField("prompt_cache_retention", "how long the provider keeps a cached prompt"),
    IgnoredField("parallel_tool_calls", "whether several tool calls may come at once; without tools there are "
                                        "none"),
    IgnoredField("reasoning_effort", "how long a reasoning model thinks; the served model does not reason"),
    IgnoredField("prediction", "Predicted Outputs only speed decoding up, the text stays the same"),
    IgnoredField("store", "storing the response for later retrieval", _falsy,
                 "store=true is not supported: tokenmill keeps no responses; send store=false or leave it out"),
    IgnoredField("background", "running the request in the background", _falsy,
                 "background=true is not supported: every request runs while its connection is open; send "
                 "background=false or leave it out"),
)}


def apply_field_policy(model: type, data: Any) -> tuple[Any, dict[str, Any]]:
    """Split `data` (a request body) into what `model` parses and the ignored known fields.

    A field `model` declares is left alone; an ignored field at a value it cannot be ignored at is a 400.
    """
    if not isinstance(data, dict):
        return data, {}
    declared = model.model_fields
    ignored = {name: data[name] for name in data if name in IGNORED_FIELDS and name not in declared}
    from tokenmill.server.error_handlers import ApiError  # here: error_handlers imports protocol, which imports us

    for name, value in ignored.items():
        rule = IGNORED_FIELDS[name]
        if not rule.accepts(value):
            raise ApiError(400, rule.refusal, param=name)
    if not ignored:
        return data, {}
    log.debug("%s: ignoring %s (fields that do not change the output)", model.__name__, ", ".join(sorted(ignored)))
    return {k: v for k, v in data.items() if k not in ignored}, ignored


def ignored_fields(body: Any) -> dict[str, Any]:
    """The known fields the policy dropped from a parsed request body (name -> value as sent)."""
    return dict(getattr(body, "_ignored", None) or {})
