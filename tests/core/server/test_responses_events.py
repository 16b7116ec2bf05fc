"""The Responses translation validates against the official openai package's own types, for the output
the chat path gives today (text) and the chat-completion shapes it will give with tools and reasoning
(OpenAI's documented chunk format: `delta.tool_calls[i].function.arguments` pieces, `reasoning_content`)."""

from __future__ import annotations

import json
import typing

from openai.types.responses import Response, ResponseStreamEvent

from tokenmill.server.responses_protocol import ResponsesRequest
from tokenmill.server.responses_stream import ResponsesStream
from tokenmill.server.responses_translate import chat_request, from_chat_completion, response_object

# event type -> the openai package's model of it (validated strictly: every required field present)
EVENT_TYPES = {typing.get_args(model.model_fields["type"].annotation)[0]: model
               for model in typing.get_args(typing.get_args(ResponseStreamEvent)[0])}
USAGE = {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}


def _chunk(delta=None, finish=None, usage=None):
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "model": "m", "choices": choices, "usage": usage}


CHUNKS = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"reasoning_content": "The user wants "}), _chunk({"reasoning_content": "the weather."}),
    _chunk({"content": "Let me check."}),
    _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
    _chunk({}, finish="tool_calls"),
    _chunk(usage=USAGE),
]
MESSAGE = {"role": "assistant", "content": "Let me check.", "reasoning_content": "The user wants the weather.",
           "tool_calls": [{"id": "call_1", "type": "function",
                           "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}


def _payloads(events: list[str]) -> list[dict]:
    out = []
    for event in events:
        kind, data = event.strip().split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {payload['type']}"
        out.append(payload)
    return out


def test_stream_events_validate_and_rebuild_the_whole_response():
    body = ResponsesRequest(input="Weather in Paris?")
    stream = ResponsesStream(response_object(body, "resp_1", "m", status="in_progress"))
    events = stream.start()
    for chunk in CHUNKS:
        events += stream.feed(chunk)
    payloads = _payloads(events + stream.finish())
    for payload in payloads:
        EVENT_TYPES[payload["type"]].model_validate(payload)  # the official event types, fields required as OpenAI sends them
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    final = Response.model_validate(payloads[-1]["response"])
    assert payloads[-1]["type"] == "response.completed"
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[0].content[0].text == "The user wants the weather."
    assert final.output_text == "Let me check."
    call = final.output[2]
    assert (call.name, call.call_id, json.loads(call.arguments)) == ("get_weather", "call_1", {"city": "Paris"})
    assert final.usage.input_tokens == 7 and final.usage.output_tokens == 9
    arguments = "".join(p["delta"] for p in payloads if p["type"] == "response.function_call_arguments.delta")
    assert arguments == call.arguments

    whole = from_chat_completion(body, "resp_1", {"model": "m", "usage": USAGE, "choices": [
        {"index": 0, "message": MESSAGE, "finish_reason": "tool_calls"}]})
    again = Response.model_validate(whole.model_dump(mode="json"))
    strip = [{k: v for k, v in item.model_dump().items() if k != "id"} for item in again.output]
    assert strip == [{k: v for k, v in item.model_dump().items() if k != "id"} for item in final.output]


def test_a_failed_generation_ends_with_error_and_response_failed():
    stream = ResponsesStream(response_object(ResponsesRequest(input="hi"), "resp_2", "m", status="in_progress"))
    events = stream.start() + stream.feed(_chunk({"content": "Hel"}))
    payloads = _payloads(events + stream.fail({"message": "engine stopped", "type": "service_unavailable"}))
    for payload in payloads:
        EVENT_TYPES[payload["type"]].model_validate(payload)
    assert [p["type"] for p in payloads[-2:]] == ["error", "response.failed"]
    assert Response.model_validate(payloads[-1]["response"]).status == "failed"


def test_tools_and_text_format_translate_to_the_chat_request():
    body = ResponsesRequest(
        input=[{"role": "user", "content": "Weather?"},
               {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
               {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
        instructions="Be brief.", max_output_tokens=50,
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": True}],
        tool_choice={"type": "function", "name": "get_weather"},
        text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}})
    chat = chat_request(body)
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat["messages"][2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": "{}"}
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert chat["tools"] == [{"type": "function", "function": {"name": "get_weather",
                                                               "parameters": {"type": "object"}, "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "w", "schema": {
        "type": "object"}, "strict": True}}
    assert chat["max_completion_tokens"] == 50
