"""A request's structured-output fields (response_format, structured_outputs, guided_*) as one checked constraint.

The constraint is compiled here, on a worker thread, before the request reaches the engine: a bad
schema, regex or grammar is a 400 naming the problem, and the engine finds the grammar compiled.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tokenmill.errors import RequestError
from tokenmill.server.error_handlers import ApiError
from tokenmill.server.protocol import _SamplingFields
from tokenmill.structured.params import StructuredOutputsParams

if TYPE_CHECKING:
    from tokenmill.server.state import ServerState

_ALIASES = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice", "guided_grammar": "grammar"}
_OPTIONS = ("json", "regex", "choice", "grammar", "json_object", "disable_any_whitespace")


def _from_response_format(fmt: dict[str, Any]) -> StructuredOutputsParams | None:
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return StructuredOutputsParams(json_object=True)
    if kind != "json_schema":
        raise ApiError(400, f"response_format.type must be text, json_object or json_schema, got {kind!r}",
                       param="response_format")
    block = fmt.get("json_schema")
    if not isinstance(block, dict) or not isinstance(block.get("schema"), dict):
        raise ApiError(400, "response_format json_schema needs json_schema.schema, a JSON schema object "
                            "(e.g. {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"x\", \"schema\": {...}}})",
                       param="response_format")
    return StructuredOutputsParams(json=block["schema"])


def _from_structured_outputs(block: dict[str, Any]) -> StructuredOutputsParams:
    unknown = sorted(set(block) - set(_OPTIONS))
    if unknown:
        raise ApiError(400, f"structured_outputs has unknown field {unknown[0]!r}; it takes one of json, regex, "
                            f"choice, grammar, json_object (and disable_any_whitespace)", param="structured_outputs")
    try:
        return StructuredOutputsParams(**block)
    except RequestError as exc:
        raise ApiError(400, str(exc), param="structured_outputs") from None


def request_constraint(body: _SamplingFields) -> StructuredOutputsParams | None:
    """The one constraint a completions or chat body asks for, or None; two at once are a 400."""
    found: list[tuple[str, StructuredOutputsParams]] = []
    if body.response_format is not None:
        spec = _from_response_format(body.response_format)
        if spec is not None:
            found.append(("response_format", spec))
    if body.structured_outputs is not None:
        found.append(("structured_outputs", _from_structured_outputs(body.structured_outputs)))
    for alias, name in _ALIASES.items():
        value = getattr(body, alias)
        if value is not None:
            try:
                found.append((alias, StructuredOutputsParams(**{name: value})))
            except RequestError as exc:
                raise ApiError(400, str(exc).replace(f"structured_outputs.{name}", alias), param=alias) from None
    if len(found) > 1:
        raise ApiError(400, f"{found[0][0]} and {found[1][0]} both constrain the output; send only one",
                       param=found[1][0])
    return found[0][1] if found else None


def constraint_field(body: _SamplingFields) -> str:
    """The name of the field that carries the request's constraint, for error messages."""
    for name in ("response_format", "structured_outputs", *_ALIASES):
        if getattr(body, name) is not None:
            return name
    return "structured_outputs"


_OWN_COMPILERS: dict[int, Any] = {}  # id(ServerState) -> a compiler of the server's own, used to validate


def _compiler(state: ServerState) -> Any:
    """The engine's compiler when the engine runs in this process (it then finds the grammar cached);
    otherwise one of the server's own, which validates (the engine compiles again, off its step)."""
    core = getattr(state.engine, "engine", None)
    if hasattr(core, "grammar_compiler"):
        return core.grammar_compiler(state.tokenizer)
    compiler = _OWN_COMPILERS.get(id(state))
    if compiler is None:
        from tokenmill.structured.compiler import GrammarCompiler

        eos = [state.tokenizer.eos_token_id] if state.tokenizer.eos_token_id is not None else []
        compiler = _OWN_COMPILERS[id(state)] = GrammarCompiler(state.tokenizer, len(state.tokenizer), eos)
    return compiler


async def compile_constraint(state: ServerState, spec: StructuredOutputsParams, param: str) -> None:
    """Compile `spec` off the event loop and the step loop (cached), or raise a 400 naming what is wrong."""
    compiler = await state.in_tokenizer_thread(_compiler, state)  # its first use reads the vocabulary
    try:
        await asyncio.to_thread(compiler.compile, spec)
    except RequestError as exc:
        raise ApiError(400, f"{param}: {exc}", param=param) from None
