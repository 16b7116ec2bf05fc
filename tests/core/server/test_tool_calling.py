"""Tool calling through the official `openai` client on the default model: required and named tool_choice
are enforced (arguments parse and validate), streamed calls reassemble to the non-streamed answer,
auto reads <tool_call> blocks with --tool-call-parser hermes, and tool results go back through the template."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 16}}, "required": ["timezone"],
        "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "description": "Time in a timezone",
                                           "parameters": TIME}}]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _chat(live_server, **kwargs):
    kwargs.setdefault("max_tokens", 96)
    kwargs.setdefault("messages", ASK)
    return live_server.client().chat.completions.create(model=live_server.model, tools=TOOLS, **kwargs)


def _check_calls(calls):
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_required_gives_arguments_that_match_the_schema(live_server, temperature):
    out = _chat(live_server, tool_choice="required", temperature=temperature, n=3 if temperature else 1, seed=11)
    for choice in out.choices:
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        _check_calls(choice.message.tool_calls)


def test_named_function_is_called(live_server):
    out = _chat(live_server, tool_choice={"type": "function", "function": {"name": "get_time"}}, temperature=0)
    [call] = out.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    _check_calls([call])
    assert out.choices[0].finish_reason == "stop"  # OpenAI's finish_reason for a named tool_choice


def _reassemble(stream):
    calls, content, reasons = {}, "", []
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            reasons.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = call["id"] or delta.id
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    return [calls[i] for i in sorted(calls)], content, [r for r in reasons if r]


def test_streamed_tool_calls_reassemble_to_the_non_streamed_result(live_server):
    whole = _chat(live_server, tool_choice="required", temperature=0)
    calls, content, reasons = _reassemble(_chat(live_server, tool_choice="required", temperature=0, stream=True))
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls]
    assert all(c["id"].startswith("call_") for c in calls)
    assert content == "" and reasons == ["tool_calls"]


@pytest.fixture
def hermes_server(live_server, monkeypatch):
    monkeypatch.setattr(live_server.state, "tool_call_parser", "hermes")
    return live_server


def test_auto_reads_hermes_tool_call_blocks_streamed_and_not(hermes_server):
    # The small model does not call tools by itself; a choice constraint makes it write one Hermes block
    # after some text, so the parser's split of content and call is checked end to end.
    text = 'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
    extra = {"structured_outputs": {"choice": [text]}}
    out = _chat(hermes_server, tool_choice="auto", temperature=0, max_tokens=200, extra_body=extra)
    message = out.choices[0].message
    assert out.choices[0].finish_reason == "tool_calls"
    assert message.content == "Let me check."
    [call] = message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris", "unit": "celsius"})
    calls, content, reasons = _reassemble(_chat(hermes_server, tool_choice="auto", temperature=0, max_tokens=200,
                                                extra_body=extra, stream=True))
    assert content == "Let me check." and reasons == ["tool_calls"]
    assert [(c["name"], c["arguments"]) for c in calls] == [(call.function.name, call.function.arguments)]


def test_auto_without_a_parser_and_bad_tool_choices_are_400s(live_server):
    for kwargs, words in (({}, "--tool-call-parser"),
                          ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
                          ({"tool_choice": "sometimes"}, "tool_choice must be")):
        with pytest.raises(openai.BadRequestError, match=words):
            _chat(live_server, max_tokens=4, **kwargs)


def test_tool_choice_none_answers_in_text(live_server):
    out = _chat(live_server, tool_choice="none", temperature=0, max_tokens=8)
    assert out.choices[0].message.tool_calls == [] and out.choices[0].message.content
    assert out.choices[0].finish_reason in ("stop", "length")


def test_tool_results_go_back_through_the_chat_template(live_server):
    first = _chat(live_server, tool_choice="required", temperature=0)
    call = first.choices[0].message.tool_calls[0]
    result = "It is 18 degrees and sunny in Paris, with a light wind from the west."
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                     {"role": "tool", "tool_call_id": call.id, "content": result}]
    out = _chat(live_server, messages=history, tool_choice="none", temperature=0, max_tokens=8)
    tokenizer = live_server.core.tokenizer
    rendered = tokenizer.apply_chat_template(
        [ASK[0], {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
         {"role": "tool", "tool_call_id": call.id, "content": result}],
        tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert result in rendered
    assert out.usage.prompt_tokens == len(tokenizer(rendered, add_special_tokens=False).input_ids)
